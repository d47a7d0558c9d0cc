// Package pkgbuild builds mpsa's .deb and .rpm with nfpm used as a library:
// the binaries, the systemd unit, the commented conffile, the annotated
// examples, man pages generated from the binaries' --help, and the
// licence. packaging/cmd/mkpkg (`make package`) and the packaging tests
// call Build.
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
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
	"github.com/goreleaser/nfpm/v2/rpm"

	"github.com/mpsa/mpsa/packaging/internal/manpage"
)

// Name is the package name in both formats.
const Name = "mpsa"

// Installed paths.
const (
	MpsadPath    = "/usr/sbin/mpsad"
	MpsactlPath  = "/usr/bin/mpsactl"
	UnitPath     = "/usr/lib/systemd/system/mpsad.service"
	ConffilePath = "/etc/swanctl/conf.d/mpsa.conf"
	DocDir       = "/usr/share/doc/mpsa"
	ExamplesDir  = DocDir + "/examples"
	ManDir       = "/usr/share/man/man8"
)

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
// is not an alternative. Fedora's strongswan package has charon-systemd,
// strongswan.service and swanctl.
var (
	debDepends = []string{"charon-systemd", "strongswan-swanctl"}
	rpmDepends = []string{"strongswan"}
)

// Inputs is what Build packages.
type Inputs struct {
	// Mpsad and Mpsactl are the built binaries.
	Mpsad, Mpsactl string
	// SourceDir is the repository root: packaging/, LICENSE and README.md
	// are read from it.
	SourceDir string
	// ExamplesDir holds controller.conf and member.conf; default
	// SourceDir/packaging/examples.
	ExamplesDir string
	// Conffile is the source of ConffilePath; default
	// SourceDir/packaging/swanctl/mpsa.conf.
	Conffile string
	// Version is the upstream version (see PackageVersion); Release the
	// package release, default "1".
	Version, Release string
	// Arch is a GOARCH; default runtime.GOARCH.
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
	if err := writeManPages(ctx, in, stage); err != nil {
		return Result{}, err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return Result{}, fmt.Errorf("pkgbuild: %w", err)
	}
	var res Result
	for _, f := range []struct {
		format string
		p      nfpm.Packager
		out    *string
	}{{"deb", deb.Default, &res.Deb}, {"rpm", rpm.DefaultRPM, &res.RPM}} {
		info := in.info(f.format, stage)
		path := filepath.Join(outDir, f.p.ConventionalFileName(info))
		if err := writePackage(f.p, f.format, info, path); err != nil {
			return Result{}, fmt.Errorf("pkgbuild: %s: %w", f.format, err)
		}
		*f.out = path
	}
	return res, nil
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
	if in.Arch == "" {
		in.Arch = runtime.GOARCH
	}
	if in.Version == "" {
		return errors.New("pkgbuild: no version")
	}
	if in.Date.IsZero() {
		return errors.New("pkgbuild: no date (use the commit time)")
	}
	need := []string{in.Mpsad, in.Mpsactl, in.Conffile,
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

// info is the nfpm description of the package in one format.
func (in *Inputs) info(format, stage string) *nfpm.Info {
	file := func(src, dst string, mode os.FileMode) *files.Content {
		return &files.Content{Source: src, Destination: dst, FileInfo: &files.ContentFileInfo{Mode: mode, MTime: in.Date}}
	}
	contents := files.Contents{
		file(in.Mpsad, MpsadPath, 0o755),
		file(in.Mpsactl, MpsactlPath, 0o755),
		file(in.src("packaging/systemd/mpsad.service"), UnitPath, 0o644),
		file(in.src("README.md"), DocDir+"/README.md", 0o644),
		file(filepath.Join(stage, "mpsad.8.gz"), ManDir+"/mpsad.8.gz", 0o644),
		file(filepath.Join(stage, "mpsactl.8.gz"), ManDir+"/mpsactl.8.gz", 0o644),
	}
	// Secrets end up in this file once it is edited: root only.
	conf := file(in.Conffile, ConffilePath, 0o600)
	conf.Type = files.TypeConfigNoReplace
	contents = append(contents, conf)
	for _, e := range examples {
		contents = append(contents, file(filepath.Join(in.ExamplesDir, e), ExamplesDir+"/"+e, 0o644))
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

// writeManPages runs each binary with --help and writes its man page,
// gzipped, into dir.
func writeManPages(ctx context.Context, in Inputs, dir string) error {
	for _, p := range manPages(in) {
		bin := in.Mpsad
		if p.Name == "mpsactl" {
			bin = in.Mpsactl
		}
		help, err := runHelp(ctx, bin)
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
