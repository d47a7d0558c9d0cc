package scale

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Line is the machine-readable summary of a run, one line:
//
//	scale: members=N join_acked_s=… rekey_acked_s=… restart_acked_s=… ctl_cpu_s=… ctl_rss_mib=… retransmits=… charon_up_s=… sent=…
//
// The first seven fields are those of issue 12; charon_up_s (charon's
// time to bring up the N IKE SAs and control children) and sent (the
// controller's control datagrams) follow.
//
// In BGP mode it goes on with bgp_converged_s (the speakers' start until
// every member has every other's prefixes), bgp_after_last_s (the same
// from the last session), bgp_resync_s (the restarted mpsad's start until
// every member has them again; 0 with FRR) and bgp_reflector_cpu_s (the
// reflector's CPU in the BGP phase), after bgp_reflector (mpsad or frr).
func (r Result) Line() string {
	l := fmt.Sprintf("scale: members=%d join_acked_s=%.3f rekey_acked_s=%.3f restart_acked_s=%.3f ctl_cpu_s=%.2f ctl_rss_mib=%.1f retransmits=%d charon_up_s=%.2f sent=%d",
		r.Members, r.Join.Acked.Seconds(), r.Rekey.Acked.Seconds(), r.Restart.Acked.Seconds(),
		r.Ctl.CPU.Seconds(), float64(r.Ctl.PeakRSS)/(1<<20), r.Retransmits, r.Join.ChildrenUp.Seconds(), r.Sent)
	if b := r.BGP; b != nil {
		l += fmt.Sprintf(" bgp_reflector=%s bgp_converged_s=%.3f bgp_after_last_s=%.3f bgp_resync_s=%.3f bgp_reflector_cpu_s=%.2f",
			b.Reflector, b.Converged.Seconds(), b.AfterLast.Seconds(), b.Resync.Seconds(), b.ReflectorCPU.Seconds())
	}
	return l
}

// Report writes a readable account of r, ending with r.Line().
func (r Result) Report(w io.Writer) {
	s := func(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }
	fmt.Fprintf(w, "\nscale: %d members: one farm charon initiating %d IKE SAs, one load generator; controller charon and mpsad\n", r.Members, r.Members)
	j := r.Join
	fmt.Fprintf(w, "  join     charon: %d IKE SAs and control children up in %s (swanctl --load-all took %s)\n", r.Members, s(j.ChildrenUp), s(j.Load))
	fmt.Fprintf(w, "           mpsad: all acknowledged %s %s after the last control child came up\n", j.SPI, s(j.Acked))
	fmt.Fprintf(w, "           per member, control child up -> SA installed: p50 %s, p90 %s, p99 %s, max %s\n", s(j.Latency[0]), s(j.Latency[1]), s(j.Latency[2]), s(j.Latency[3]))
	if b := r.BGP; b != nil {
		fmt.Fprintf(w, "  bgp      %d speakers with %d prefixes each: sessions up in %s; every member had the %d prefixes of the others %s after the start, %s after the last session\n",
			r.Members, BGPPrefixes, s(b.Sessions), b.Prefixes, s(b.Converged), s(b.AfterLast))
		fmt.Fprintf(w, "           reflector %s: CPU %.2f s; the policy accepted %d prefixes and rejected %d; controller charon %.2f s, farm charon %.2f s (BGP through kernel-libipsec: %d packets out of the controller's ipsec0, %d in)\n",
			b.Reflector, b.ReflectorCPU.Seconds(), b.Accepted, b.Rejected, b.CtlCharon.Seconds(), b.FarmCharon.Seconds(), b.Sent, b.Received)
	}
	fmt.Fprintf(w, "  rekey    all acknowledged %s %s after mpsactl rekey (last member installed it after %s)\n", r.Rekey.SPI, s(r.Rekey.Acked), s(r.Rekey.LastInstall))
	fmt.Fprintf(w, "           %d members installed it within 1 s, before any PUT could be retransmitted\n", r.Rekey.BeforeRetransmit)
	fmt.Fprintf(w, "  restart  all acknowledged %s %s after the new mpsad started (last member installed it after %s)\n", r.Restart.SPI, s(r.Restart.Acked), s(r.Restart.LastInstall))
	fmt.Fprintf(w, "           %d members installed it within 1 s, before any PUT could be retransmitted\n", r.Restart.BeforeRetransmit)
	if b := r.BGP; b != nil && b.Resync > 0 {
		fmt.Fprintf(w, "           bgp: every member had the others' prefixes again %s after the new mpsad started\n", s(b.Resync))
	}
	fmt.Fprintf(w, "  %-8s %7s %8s %7s  %-22s %-23s  %s\n", "phase", "sent", "received", "retrans",
		"ctl lost tun/ch/md/ovl", "farm lost tun/ch/md/ovl", "CPU s: ctl mpsad / ctl charon / farm charon / load generator")
	for _, p := range []struct {
		name string
		p    Phase
	}{{"join", j.Phase}, {"rekey", r.Rekey.Phase}, {"restart", r.Restart.Phase}} {
		fmt.Fprintf(w, "  %-8s %7d %8d %7d  %-22s %-23s  %.2f / %.2f / %.2f / %.2f\n", p.name, p.p.Sent, p.p.Received, p.p.Retransmits,
			p.p.CtlLost, p.p.FarmLost, p.p.CtlMPSAD.Seconds(), p.p.CtlCharon.Seconds(), p.p.FarmCharon.Seconds(), p.p.Farm.Seconds())
	}
	fmt.Fprintf(w, "  harness: %d, %d and %d status requests to the controller's mpsad while waiting (%.3f, %.3f and %.3f s)\n",
		j.Polls, r.Rekey.Polls, r.Restart.Polls, j.PollTime.Seconds(), r.Rekey.PollTime.Seconds(), r.Restart.PollTime.Seconds())
	fmt.Fprintf(w, "  controller mpsad: %.2f s CPU over the run (both processes), peak RSS %.1f MiB\n",
		r.Ctl.CPU.Seconds(), float64(r.Ctl.PeakRSS)/(1<<20))
	fmt.Fprintln(w, r.Line())
}

// String is "tun/charon/mpsad/overload".
func (l Losses) String() string {
	return fmt.Sprintf("%d/%d/%d/%d", l.Tun, l.Charon, l.MPSAD, l.Overload)
}

// Plot draws rekey-to-all-acknowledged time (and the same after a
// restart) against N on log-log axes into a PNG with gnuplot: the median
// of the runs of each N, with bars from the fastest to the slowest.
func Plot(ctx context.Context, results []Result, png string) error {
	byN := map[int][]Result{}
	for _, r := range results {
		byN[r.Members] = append(byN[r.Members], r)
	}
	if len(byN) < 2 {
		return errors.New("plot: needs runs with at least two member counts")
	}
	gp, err := exec.LookPath("gnuplot")
	if err != nil {
		return fmt.Errorf("plot: %w (Debian: apt-get install gnuplot-nox)", err)
	}
	dir, err := os.MkdirTemp("", "mpsa-scale-plot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ns := slices.Sorted(maps.Keys(byN))
	dat := filepath.Join(dir, "scale.dat")
	if err := os.WriteFile(dat, []byte(plotData(byN)), 0o600); err != nil {
		return err
	}
	out, err := filepath.Abs(png)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, gp)
	cmd.Stdin = strings.NewReader(plotScript(dat, out, ns[0], ns[len(ns)-1]))
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %w: %s", err, b)
	}
	return nil
}

// plotData is the data file of Plot: for each N, the median, fastest and
// slowest rekey and restart times.
func plotData(byN map[int][]Result) string {
	var b strings.Builder
	b.WriteString("# members rekey_median rekey_min rekey_max restart_median restart_min restart_max runs\n")
	for _, n := range slices.Sorted(maps.Keys(byN)) {
		rs := byN[n]
		fmt.Fprintf(&b, "%d", n)
		for _, pick := range []func(Result) time.Duration{
			func(r Result) time.Duration { return r.Rekey.Acked },
			func(r Result) time.Duration { return r.Restart.Acked },
		} {
			ds := make([]time.Duration, len(rs))
			for i, r := range rs {
				ds[i] = pick(r)
			}
			slices.Sort(ds)
			fmt.Fprintf(&b, " %.4f %.4f %.4f", median(ds).Seconds(), ds[0].Seconds(), ds[len(ds)-1].Seconds())
		}
		fmt.Fprintf(&b, " %d\n", len(rs))
	}
	return b.String()
}

// median of sorted durations (the mean of the middle two for an even
// count).
func median(ds []time.Duration) time.Duration {
	m := len(ds) / 2
	if len(ds)%2 == 1 {
		return ds[m]
	}
	return (ds[m-1] + ds[m]) / 2
}

// plotScript is the gnuplot script of Plot.
func plotScript(dat, png string, lo, hi int) string {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	return strings.Join([]string{
		"set terminal pngcairo size 800,520 font 'sans,10'",
		"set output " + q(png),
		"set title 'mpsa with real charon: time until all N members acknowledged a new group SA'",
		"set logscale xy",
		"set xlabel 'members (N)'",
		"set ylabel 'seconds'",
		fmt.Sprintf("set xrange [%.0f:%.0f]", float64(lo)/1.5, float64(hi)*1.5),
		"set grid",
		"set key top left",
		"plot " + q(dat) + " using 1:2:3:4 with yerrorlines lw 2 pt 7 title 'mpsactl rekey -> all acknowledged (median, min-max)', \\",
		"     " + q(dat) + " using 1:5:6:7 with yerrorlines lw 2 pt 5 title 'mpsad restart -> all acknowledged (median, min-max)', \\",
		"     2 with lines dt 2 lc rgb 'gray40' title 'goal at N = 1,000: 2 s'",
		"",
	}, "\n")
}
