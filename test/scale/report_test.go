package scale

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestLine(t *testing.T) {
	r := Result{
		Members: 1000,
		Join:    JoinResult{Acked: 120 * time.Millisecond, ChildrenUp: 4700 * time.Millisecond},
		Rekey:   PushResult{Acked: 1266 * time.Millisecond},
		Restart: PushResult{Acked: 1498 * time.Millisecond},
		Ctl:     Usage{CPU: 2440 * time.Millisecond, PeakRSS: 24 << 20},
		Sent:    7653, Retransmits: 1684,
	}
	want := "scale: members=1000 join_acked_s=0.120 rekey_acked_s=1.266 restart_acked_s=1.498 ctl_cpu_s=2.44 ctl_rss_mib=24.0 retransmits=1684 charon_up_s=4.70 sent=7653"
	if got := r.Line(); got != want {
		t.Errorf("Line:\n got %s\nwant %s", got, want)
	}
	var b bytes.Buffer
	r.Report(&b)
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if lines[len(lines)-1] != want {
		t.Errorf("the report's last line is %q, want the machine-readable line", lines[len(lines)-1])
	}
}

func TestPlotScript(t *testing.T) {
	s := plotScript("/tmp/d'x.dat", "/tmp/out.png", 100, 1000)
	for _, want := range []string{"set logscale xy", "set output '/tmp/out.png'", "'/tmp/d''x.dat' using 1:2:3:4", "set xrange [67:1500]"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
}

func TestPlotData(t *testing.T) {
	run := func(n int, rekey, restart time.Duration) Result {
		return Result{Members: n, Rekey: PushResult{Acked: rekey}, Restart: PushResult{Acked: restart}}
	}
	s := time.Second
	got := plotData(map[int][]Result{
		1000: {run(1000, 3*s, 1*s), run(1000, 1*s, 2*s), run(1000, 2*s, 4*s)},
		100:  {run(100, s/10, s/5), run(100, s/5, s/10)},
	})
	want := "# members rekey_median rekey_min rekey_max restart_median restart_min restart_max runs\n" +
		"100 0.1500 0.1000 0.2000 0.1500 0.1000 0.2000 2\n" +
		"1000 2.0000 1.0000 3.0000 2.0000 1.0000 4.0000 3\n"
	if got != want {
		t.Errorf("plot data:\n%s\nwant\n%s", got, want)
	}
}
