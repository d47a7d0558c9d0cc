// Command mpsa-scale is the scale harness of mpsa with real charon (see
// package github.com/mpsa/mpsa/test/scale). `make scale` runs it through
// scripts/scale.sh.
//
//	mpsa-scale run [-members "100 300 1000"] [-repeat K] [-bgp [-frr]] [-bin DIR] [-plot FILE] [-logs DIR]
//	mpsa-scale farm -config FILE -record SOCKET
//
// run measures each member count in turn and prints a report per count,
// ending with the machine-readable lines; with two counts or more and
// -plot it draws the rekey times against N with gnuplot. farm is the load
// generator that run starts inside the member-farm namespace.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/test/scale"
)

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var code int
	switch os.Args[1] {
	case "run":
		code = run(ctx, os.Args[2:])
	case "farm":
		code = farm(ctx, os.Args[2:])
	case "-h", "--help", "help":
		usage(os.Stdout)
	default:
		usage(os.Stderr)
		code = 2
	}
	stop()
	os.Exit(code)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  mpsa-scale run [-members "100 300 1000"] [-repeat K] [-bgp [-frr]] [-bin DIR] [-plot FILE] [-logs DIR]
      measure mpsad with real charon for each member count (needs root);
      -bgp adds a route reflector and 4 prefixes per member (BGP phase);
      -frr makes FRR's bgpd the reflector
  mpsa-scale farm -config FILE -record SOCKET
      the load generator (run starts it in the member-farm namespace)
`)
}

func run(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	members := fs.String("members", "1000", "member counts to measure, separated by spaces or commas")
	bin := fs.String("bin", "bin", "directory holding mpsad, mpsactl and mpsa-scale")
	plot := fs.String("plot", "", "with two member counts or more, draw the rekey times against N into this PNG")
	logs := fs.String("logs", "", "copy the logs of charon, mpsad and the load generator into this directory")
	repeat := fs.Int("repeat", 1, "runs of each member count (the plot shows their median and range)")
	bgp := fs.Bool("bgp", false, "give the group a route reflector and every member a BGP speaker with 4 prefixes, and measure its convergence")
	frr := fs.Bool("frr", false, "with -bgp, make FRR's bgpd the route reflector instead of mpsad's (a comparison)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	counts, err := parseCounts(*members)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mpsa-scale run: -members: %v\n", err)
		return 2
	}
	if *repeat < 1 {
		fmt.Fprintln(os.Stderr, "mpsa-scale run: -repeat must be at least 1")
		return 2
	}
	var results []scale.Result
	for _, n := range counts {
		for range *repeat {
			r, err := runOne(ctx, scale.Options{Members: n, Bin: *bin, Log: os.Stdout, KeepLogs: *logs, BGP: *bgp || *frr, FRR: *frr})
			if err != nil {
				fmt.Fprintf(os.Stderr, "mpsa-scale: %d members: %v\n", n, err)
				return 1
			}
			r.Report(os.Stdout)
			results = append(results, r)
		}
	}
	if *plot != "" && len(counts) >= 2 {
		if err := scale.Plot(ctx, results, *plot); err != nil {
			fmt.Fprintf(os.Stderr, "mpsa-scale: %v\n", err)
			return 1
		}
		fmt.Printf("\nscale: plot of rekey and restart times against N written to %s\n", *plot)
	}
	if len(results) > 1 {
		fmt.Println()
		for _, r := range results {
			fmt.Println(r.Line())
		}
	}
	return 0
}

// parseCounts reads "100 300 1000" or "100,300,1000".
func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' }) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > scale.MaxMembers {
			return nil, fmt.Errorf("%q is not a member count from 1 to %d", f, scale.MaxMembers)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no member count in %q", s)
	}
	return out, nil
}

// runOne runs the harness for one member count; everything it started is
// stopped, and its namespaces removed, before it returns.
func runOne(ctx context.Context, o scale.Options) (r scale.Result, err error) {
	env := &testenv.Program{Prefix: "mpsa-scale: "}
	defer env.RunCleanups()
	defer env.Recover(&err)
	h := scale.New(env, o)
	defer func() {
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s\n", h.Logs())
		}
	}()
	if _, err = h.Join(ctx); err != nil {
		return r, err
	}
	if o.BGP {
		if _, err = h.BGP(ctx); err != nil {
			return r, err
		}
	}
	if _, err = h.Rekey(ctx); err != nil {
		return r, err
	}
	if _, err = h.Restart(ctx); err != nil {
		return r, err
	}
	return h.Result()
}

func farm(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("farm", flag.ContinueOnError)
	config := fs.String("config", "", "swanctl.conf with the member role's mpsa section")
	record := fs.String("record", "", "unix socket serving GET /record")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *config == "" || *record == "" {
		fmt.Fprintln(os.Stderr, "mpsa-scale farm: -config and -record are required")
		return 2
	}
	err := scale.RunFarm(ctx, scale.FarmOptions{Config: *config, RecordSocket: *record,
		Logger: func(l slog.Level) *slog.Logger {
			return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
		}})
	if err != nil {
		fmt.Fprintf(os.Stderr, "mpsa-scale farm: %v\n", err)
		return 1
	}
	return 0
}
