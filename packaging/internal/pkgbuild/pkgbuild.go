// Package pkgbuild builds mpsa's .deb and .rpm with nfpm used as a library:
// the binaries, the systemd unit, the commented conffile, the annotated
// examples, man pages generated from the binaries' --help, and the
// licence. packaging/cmd/mkpkg (`make package`) and the packaging tests
// call Build.
//
// Debian and Fedora build strongSwan with different directories (see
// internal/paths), so each package gets binaries of its own: Build
// compiles mpsad and mpsactl once per package with that distribution's
// default configuration file and VICI socket, and with the package's
// version, and puts the conffile under that distribution's swanctl
// directory. The conffile, the examples and the man pages name that
// distribution's paths.
package pkgbuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
	"github.com/goreleaser/nfpm/v2/rpm"

	"github.com/mpsa/mpsa/internal/paths"
	"github.com/mpsa/mpsa/packaging/internal/manpage"
)

// Name is the package name in both formats.
const Name = "mpsa"

// Installed paths, the same in both packages; for the conffile see
// ConffilePath.
const (
	MpsadPath   = "/usr/sbin/mpsad"
	MpsactlPath = "/usr/bin/mpsactl"
	UnitPath    = "/usr/lib/systemd/system/mpsad.service"
	DocDir      = "/usr/share/doc/mpsa"
	ExamplesDir = DocDir + "/examples"
	ManDir      = "/usr/share/man/man8"
)

// Distro is the strongSwan the package of a format is built for: Debian's
// for the .deb, Fedora's for the .rpm.
func Distro(format string) paths.Distro {
	if format == "rpm" {
		return paths.Fedora()
	}
	return paths.Debian()
}

// ConffilePath is where the package for distribution d installs mpsa.conf:
// in conf.d of swanctl's directory, which the stock swanctl.conf includes
// (/etc/swanctl/conf.d/mpsa.conf on Debian,
// /etc/strongswan/swanctl/conf.d/mpsa.conf on Fedora).
func ConffilePath(d paths.Distro) string { return d.SwanctlDir() + "/conf.d/mpsa.conf" }

// localize rewrites the Debian paths in a packaged text (the conffile and
// the examples are written for Debian) into those of d.
func localize(text string, d paths.Distro) string {
	deb := paths.Debian()
	return strings.NewReplacer(
		deb.VICI, d.VICI,
		deb.SocketPath(), d.SocketPath(),
		deb.SwanctlDir()+"/", d.SwanctlDir()+"/",
	).Replace(text)
}

// Examples are the example configurations, in packaging/examples and under
// ExamplesDir.
var examples = []string{"controller.conf", "member.conf"}

// The package description: a synopsis line and a paragraph.
const (
	synopsis    = "multi-point IPsec SAs beside strongSwan (draft-yamaya-ipsecme-mpsa)"
	description = "mpsad runs beside strongSwan's charon and turns it into a multi-point VPN:\n" +
		"a controller hands one shared ESP security association to every member\n" +
		"of a group after IKEv2, and the members then send traffic to each other\n" +
		"directly with it, with no per-pair tunnels and no traffic through the\n" +
		"controller. Rekeys roll over without packet loss."
)

// Dependencies by distribution. On Debian only charon-systemd provides
// strongswan.service, the unit mpsad.service requires (strongswan-charon
// runs charon under the ipsec starter, strongswan-starter.service), so it
// is not an alternative. libstrongswan-standard-plugins holds charon's
// openssl and gcm plugins: libstrongswan only recommends it, and without
// it a charon that does ESP itself (kernel-libipsec) still proposes its
// default AES-GCM for the control child and cannot install it. Fedora's
// strongswan package has charon-systemd, strongswan.service, swanctl and
// those plugins. procps provides /bin/kill, which the unit's ExecReload
// runs; Debian does not install it everywhere (minbase has none). On
// Fedora util-linux, which systemd requires, provides kill.
var (
	debDepends = []string{"charon-systemd", "strongswan-swanctl", "libstrongswan-standard-plugins", "procps"}
	rpmDepends = []string{"strongswan"}
)

// DebDepends are the Debian packages the .deb depends on.
func DebDepends() []string { return slices.Clone(debDepends) }

// Inputs is what Build packages.
type Inputs struct {
	// SourceDir is the repository root: the commands are built from it,
	// and packaging/, LICENSE and README.md are read from it.
	SourceDir string
	// Go is the go command that builds the binaries; "go" (from PATH)
	// when empty.
	Go string
	// Commit is stamped into the binaries beside Version (git rev-parse
	// --short HEAD); "unknown" when empty.
	Commit string
	// ExamplesDir holds controller.conf and member.conf; default
	// SourceDir/packaging/examples.
	ExamplesDir string
	// Conffile is the source of the conffile (see ConffilePath), written
	// for Debian and localized for the .rpm; default
	// SourceDir/packaging/swanctl/mpsa.conf.
	Conffile string
	// Version is the upstream version (see PackageVersion), which the
	// binaries report too; Release the package release, default "1".
	Version, Release string
	// Arch is a GOARCH; default runtime.GOARCH. Build runs the binaries
	// (for their --help), so it must be one this machine runs.
	Arch string
	// Date is the time of every file in the packages and the date of the
	// man pages; use the commit time so that builds are reproducible.
	Date time.Time
}

// Result names the packages Build wrote.
type Result struct {
	Deb, RPM string
}

// Build writes the .deb and the .rpm into outDir, creating it.
func Build(ctx context.Context, in Inputs, outDir string) (Result, error) {
	if err := in.defaults(); err != nil {
		return Result{}, err
	}
	stage, err := os.MkdirTemp("", "mpsa-pkg-")
	if err != nil {
		return Result{}, fmt.Errorf("pkgbuild: staging directory: %w", err)
	}
	defer os.RemoveAll(stage)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return Result{}, fmt.Errorf("pkgbuild: %w", err)
	}
	var res Result
	for _, f := range []struct {
		format string
		p      nfpm.Packager
		out    *string
	}{{"deb", deb.Default, &res.Deb}, {"rpm", rpm.DefaultRPM, &res.RPM}} {
		dir := filepath.Join(stage, f.format)
		if err := in.stage(ctx, f.format, dir); err != nil {
			return Result{}, fmt.Errorf("pkgbuild: %s: %w", f.format, err)
		}
		info := in.info(f.format, dir)
		path := filepath.Join(outDir, f.p.ConventionalFileName(info))
		if err := writePackage(f.p, f.format, info, path); err != nil {
			return Result{}, fmt.Errorf("pkgbuild: %s: %w", f.format, err)
		}
		*f.out = path
	}
	return res, nil
}

// stage writes into dir what the package of format holds that is made for
// its distribution: the binaries, their man pages, and the conffile and
// examples with the distribution's paths.
func (in *Inputs) stage(ctx context.Context, format, dir string) error {
	d := Distro(format)
	if err := os.MkdirAll(filepath.Join(dir, "examples"), 0o755); err != nil {
		return err
	}
	if err := in.buildBinaries(ctx, d, dir); err != nil {
		return err
	}
	if err := writeManPages(ctx, in, d, dir); err != nil {
		return err
	}
	texts := map[string]string{in.Conffile: filepath.Join(dir, "mpsa.conf")}
	for _, e := range examples {
		texts[filepath.Join(in.ExamplesDir, e)] = filepath.Join(dir, "examples", e)
	}
	for src, dst := range texts {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(dst, []byte(localize(string(b), d)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ldflags are the -ldflags of the binaries of a package with this version
// and commit for distribution d: version stamps and d's default paths.
func ldflags(version, commit string, d paths.Distro) string {
	return fmt.Sprintf("-s -w -X github.com/mpsa/mpsa/internal/version.Version=%s -X github.com/mpsa/mpsa/internal/version.Commit=%s %s",
		version, commit, d.LDFlags())
}

// buildBinaries builds mpsad and mpsactl from SourceDir into dir, for d,
// stamped with the package version. The build depends only on the
// sources, the go command and these flags (no VCS stamping, no cgo, no
// file system paths), so packages build reproducibly.
func (in *Inputs) buildBinaries(ctx context.Context, d paths.Distro, dir string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, in.Go, "build", "-trimpath", "-buildvcs=false",
		"-ldflags", ldflags(in.Version, in.Commit, d),
		"-o", dir+string(filepath.Separator), "./cmd/mpsad", "./cmd/mpsactl")
	cmd.Dir = in.SourceDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+in.Arch, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build for %s: %w\n%s", d.Name, err, out)
	}
	return nil
}

func (in *Inputs) defaults() error {
	if in.ExamplesDir == "" {
		in.ExamplesDir = filepath.Join(in.SourceDir, "packaging", "examples")
	}
	if in.Conffile == "" {
		in.Conffile = filepath.Join(in.SourceDir, "packaging", "swanctl", "mpsa.conf")
	}
	if in.Release == "" {
		in.Release = "1"
	}
	if in.Go == "" {
		in.Go = "go"
	}
	if in.Commit == "" {
		in.Commit = "unknown"
	}
	if in.Arch == "" {
		in.Arch = runtime.GOARCH
	}
	if in.Version == "" {
		return errors.New("pkgbuild: no version")
	}
	if in.Date.IsZero() {
		return errors.New("pkgbuild: no date (use the commit time)")
	}
	// Both are stamped with -X, whose argument ends at a blank.
	for _, v := range []string{in.Version, in.Commit} {
		if strings.ContainsAny(v, " \t\n'\"") {
			return fmt.Errorf("pkgbuild: %q: a version or commit with blanks or quotes", v)
		}
	}
	need := []string{in.Conffile,
		in.src("go.mod"), in.src("cmd/mpsad"), in.src("cmd/mpsactl"),
		in.src("LICENSE"), in.src("README.md"), in.src("packaging/deb/copyright"),
		in.src("packaging/systemd/mpsad.service")}
	for _, e := range examples {
		need = append(need, filepath.Join(in.ExamplesDir, e))
	}
	for _, p := range need {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("pkgbuild: missing input: %w", err)
		}
	}
	return nil
}

func (in *Inputs) src(rel string) string { return filepath.Join(in.SourceDir, filepath.FromSlash(rel)) }

// info is the nfpm description of the package in one format, with what
// stage wrote into dir.
func (in *Inputs) info(format, dir string) *nfpm.Info {
	file := func(src, dst string, mode os.FileMode) *files.Content {
		return &files.Content{Source: src, Destination: dst, FileInfo: &files.ContentFileInfo{Mode: mode, MTime: in.Date}}
	}
	contents := files.Contents{
		file(filepath.Join(dir, "mpsad"), MpsadPath, 0o755),
		file(filepath.Join(dir, "mpsactl"), MpsactlPath, 0o755),
		file(in.src("packaging/systemd/mpsad.service"), UnitPath, 0o644),
		file(in.src("README.md"), DocDir+"/README.md", 0o644),
		file(filepath.Join(dir, "mpsad.8.gz"), ManDir+"/mpsad.8.gz", 0o644),
		file(filepath.Join(dir, "mpsactl.8.gz"), ManDir+"/mpsactl.8.gz", 0o644),
	}
	// Secrets end up in this file once it is edited: root only.
	conf := file(filepath.Join(dir, "mpsa.conf"), ConffilePath(Distro(format)), 0o600)
	conf.Type = files.TypeConfigNoReplace
	contents = append(contents, conf)
	for _, e := range examples {
		contents = append(contents, file(filepath.Join(dir, "examples", e), ExamplesDir+"/"+e, 0o644))
	}
	info := &nfpm.Info{
		Name:          Name,
		Arch:          in.Arch,
		Platform:      "linux",
		Version:       in.Version,
		VersionSchema: "none",
		Release:       in.Release,
		Section:       "net",
		Priority:      "optional",
		Maintainer:    "mpsa developers <mpsa@users.noreply.github.com>",
		Vendor:        "mpsa",
		Homepage:      "https://github.com/mpsa/mpsa",
		License:       "Apache-2.0",
		MTime:         in.Date,
		Description:   synopsis + "\n" + description,
	}
	switch format {
	case "deb":
		info.Depends = debDepends
		contents = append(contents, file(in.src("packaging/deb/copyright"), DocDir+"/copyright", 0o644))
		info.Scripts = nfpm.Scripts{
			PostInstall: in.src("packaging/deb/postinst"),
			PreRemove:   in.src("packaging/deb/prerm"),
			PostRemove:  in.src("packaging/deb/postrm"),
		}
	case "rpm":
		info.Description = description // the first line is RPM.Summary
		info.Depends = rpmDepends
		lic := file(in.src("LICENSE"), "/usr/share/licenses/mpsa/LICENSE", 0o644)
		lic.Type = files.TypeRPMLicense
		contents = append(contents, lic)
		info.Scripts = nfpm.Scripts{
			PostInstall: in.src("packaging/rpm/post"),
			PreRemove:   in.src("packaging/rpm/preun"),
			PostRemove:  in.src("packaging/rpm/postun"),
		}
		info.RPM = nfpm.RPM{
			Summary:   "Multi-point IPsec SAs beside strongSwan",
			Group:     "System Environment/Daemons",
			BuildHost: "mpsa",
			Packager:  info.Maintainer,
		}
	}
	info.Contents = contents
	return info
}

func writePackage(p nfpm.Packager, format string, info *nfpm.Info, path string) error {
	if err := nfpm.PrepareForPackager(info, format); err != nil {
		return fmt.Errorf("preparing contents: %w", err)
	}
	var buf bytes.Buffer
	if err := p.Package(info, &buf); err != nil {
		return fmt.Errorf("packaging: %w", err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing package: %w", err)
	}
	return nil
}

// writeManPages runs each binary in dir with --help and writes its man
// page for distribution d, gzipped, into dir.
func writeManPages(ctx context.Context, in *Inputs, d paths.Distro, dir string) error {
	for _, p := range manPages(in, d) {
		help, err := runHelp(ctx, filepath.Join(dir, p.Name))
		if err != nil {
			return err
		}
		p.Help = help
		roff, err := manpage.Render(p)
		if err != nil {
			return fmt.Errorf("pkgbuild: %w", err)
		}
		gz, err := manpage.Gzip(roff)
		if err != nil {
			return fmt.Errorf("pkgbuild: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, p.Name+".8.gz"), gz, 0o644); err != nil {
			return fmt.Errorf("pkgbuild: writing man page: %w", err)
		}
	}
	return nil
}

// runHelp returns the stdout of `bin --help`, which must exit 0.
func runHelp(ctx context.Context, bin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--help")
	cmd.Env = []string{"LANG=C", "LC_ALL=C", "PATH=/usr/bin:/bin"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("pkgbuild: %s --help: %w: %s", bin, err, stderr.Bytes())
	}
	if stdout.Len() == 0 {
		return "", fmt.Errorf("pkgbuild: %s --help printed nothing on stdout", bin)
	}
	return stdout.String(), nil
}
