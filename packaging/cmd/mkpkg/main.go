// Command mkpkg builds mpsa's .deb and .rpm from the source tree (`make
// package` runs it):
//
//	mkpkg -out dist -describe "$(git describe --tags --always --dirty)" -commit "$(git rev-parse --short HEAD)" \
//	      -commits "$(git rev-list --count HEAD)" -date "$(git log -1 --format=%ct)"
//
// It builds mpsad and mpsactl once per package, stamped with the package's
// version and with the default paths of the distribution's strongSwan
// (Debian's for the .deb, Fedora's for the .rpm), and prints the path of
// each package it wrote.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/mpsa/mpsa/packaging/internal/pkgbuild"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mkpkg", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		goCmd    = fs.String("go", "go", "the go command that builds the binaries")
		outDir   = fs.String("out", "dist", "directory to write the packages into")
		srcDir   = fs.String("src", ".", "repository root")
		describe = fs.String("describe", "", "output of git describe --tags --always --dirty (required)")
		commit   = fs.String("commit", "", "output of git rev-parse --short HEAD, stamped into the binaries")
		commits  = fs.Int("commits", 0, "output of git rev-list --count HEAD, for versions before the first tag")
		release  = fs.String("release", "1", "package release (deb revision, rpm release)")
		arch     = fs.String("arch", runtime.GOARCH, "GOARCH to build the binaries for (one this machine runs)")
		epoch    = fs.Int64("date", 0, "commit time, seconds since 1970 (SOURCE_DATE_EPOCH); file times and man page dates (required)")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *describe == "" || *epoch <= 0 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "mkpkg: -describe and -date are required; see mkpkg -help")
		return 2
	}
	version, err := pkgbuild.PackageVersion(*describe, *commits)
	if err != nil {
		fmt.Fprintf(stderr, "mkpkg: %v\n", err)
		return 1
	}
	res, err := pkgbuild.Build(ctx, pkgbuild.Inputs{
		SourceDir: *srcDir,
		Go:        *goCmd,
		Commit:    *commit,
		Version:   version,
		Release:   *release,
		Arch:      *arch,
		Date:      time.Unix(*epoch, 0).UTC(),
	}, *outDir)
	if err != nil {
		fmt.Fprintf(stderr, "mkpkg: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, res.Deb)
	fmt.Fprintln(stdout, res.RPM)
	return 0
}
