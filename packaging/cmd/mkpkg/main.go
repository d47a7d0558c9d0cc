// Command mkpkg builds mpsa's .deb and .rpm from the binaries `make build`
// wrote (`make package` runs it):
//
//	mkpkg -bindir bin -out dist -describe "$(git describe --tags --always --dirty)" \
//	      -commits "$(git rev-list --count HEAD)" -date "$(git log -1 --format=%ct)"
//
// It prints the path of each package it wrote.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
		binDir   = fs.String("bindir", "bin", "directory with the built mpsad and mpsactl")
		outDir   = fs.String("out", "dist", "directory to write the packages into")
		srcDir   = fs.String("src", ".", "repository root")
		describe = fs.String("describe", "", "output of git describe --tags --always --dirty (required)")
		commits  = fs.Int("commits", 0, "output of git rev-list --count HEAD, for versions before the first tag")
		release  = fs.String("release", "1", "package release (deb revision, rpm release)")
		arch     = fs.String("arch", runtime.GOARCH, "GOARCH the binaries were built for")
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
		Mpsad:     filepath.Join(*binDir, "mpsad"),
		Mpsactl:   filepath.Join(*binDir, "mpsactl"),
		SourceDir: *srcDir,
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
