package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/xfrm"
)

// fakeClock is a settable clock for the SA age.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

// newMetrics is New that fails the test on an error.
func newMetrics(t *testing.T, opts Options) *Metrics {
	t.Helper()
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// serve starts a real HTTP server on 127.0.0.1 for m and returns its base
// URL; the server is shut down, and Serve's result checked, at cleanup.
func serve(t *testing.T, m *Metrics) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, m.Registry()) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeListener returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("ServeListener did not return after cancel")
		}
	})
	return "http://" + ln.Addr().String()
}

// scrape fetches /metrics and parses it.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + Path)
	if err != nil {
		t.Fatalf("GET %s: %v", Path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s\n%s", Path, resp.Status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing exposition: %v", err)
	}
	return mfs
}

// series renders the samples of one family as "label=value,... value"
// lines, sorted, for exact comparison.
func series(t *testing.T, mfs map[string]*dto.MetricFamily, name string) []string {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		return nil
	}
	var out []string
	for _, m := range mf.GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		var v float64
		switch {
		case m.Counter != nil:
			v = m.GetCounter().GetValue()
		case m.Gauge != nil:
			v = m.GetGauge().GetValue()
		default:
			t.Fatalf("%s: unexpected metric type %v", name, mf.GetType())
		}
		out = append(out, fmt.Sprintf("%s %g", strings.Join(ls, ","), v))
	}
	sort.Strings(out)
	return out
}

func wantSeries(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want ...string) {
	t.Helper()
	got := series(t, mfs, name)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\ngot\n  %s\nwant\n  %s", name, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestScrapeExposesDaemonSeries(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	m := newMetrics(t, Options{Version: "1.2.3", Commit: "abc1234", Now: clock.Now})
	base := serve(t, m)

	m.AddGroup("branch")
	m.SetGroupSA("branch", 0xc0ffee01, clock.Now().Add(-90*time.Second))
	m.SetMembers("branch", 3)
	m.Rekeyed("branch", RekeyManual)
	m.Rekeyed("branch", RekeyLifetime)
	m.Rekeyed("branch", RekeyLifetime)
	m.PutRetransmitted("branch")
	m.ControlDropped(DropNoIKESA)
	m.ControlDropped(DropNoIKESA)
	m.ControlDropped(DropMalformed)
	m.SetTrafficSource("branch", func(ctx context.Context) ([]xfrm.Counters, error) {
		if _, ok := ctx.Deadline(); !ok {
			return nil, errors.New("no deadline on the scrape context")
		}
		return []xfrm.Counters{
			{SPI: 0xc0ffee01, InPackets: 10, InBytes: 1500, OutPackets: 20, OutBytes: 3000, InErrors: 1},
			{SPI: 0x00000007, InPackets: 5, OutErrors: 2},
		}, nil
	})

	m.SetDropSource("branch", func(ctx context.Context) (map[string]uint64, error) {
		return map[string]uint64{"no_outbound_sa": 4, "unknown_spi": 0}, nil
	})

	mfs := scrape(t, base)
	wantSeries(t, mfs, "mpsa_build_info", "commit=abc1234,version=1.2.3 1")
	wantSeries(t, mfs, "mpsa_dataplane_dropped_total", "group=branch,reason=no_outbound_sa 4", "group=branch,reason=unknown_spi 0")
	wantSeries(t, mfs, "mpsa_group_sa_age_seconds", "group=branch,spi=0xc0ffee01 90")
	wantSeries(t, mfs, "mpsa_group_members", "group=branch 3")
	wantSeries(t, mfs, "mpsa_rekeys_total",
		"group=branch,reason=lifetime 2",
		"group=branch,reason=manual 1",
		"group=branch,reason=member_join 0",
		"group=branch,reason=member_leave 0")
	wantSeries(t, mfs, "mpsa_put_retransmissions_total", "group=branch 1")
	wantSeries(t, mfs, "mpsa_control_dropped_total",
		"reason=malformed 1", "reason=no_control_child 0", "reason=no_ike_sa 2",
		"reason=not_protected 0", "reason=spi_mismatch 0", "reason=unexpected 0")
	wantSeries(t, mfs, "mpsa_sa_packets_total",
		"direction=in,group=branch,spi=0x00000007 5",
		"direction=in,group=branch,spi=0xc0ffee01 10",
		"direction=out,group=branch,spi=0x00000007 0",
		"direction=out,group=branch,spi=0xc0ffee01 20")
	wantSeries(t, mfs, "mpsa_sa_bytes_total",
		"direction=in,group=branch,spi=0x00000007 0",
		"direction=in,group=branch,spi=0xc0ffee01 1500",
		"direction=out,group=branch,spi=0x00000007 0",
		"direction=out,group=branch,spi=0xc0ffee01 3000")
	wantSeries(t, mfs, "mpsa_sa_errors_total",
		"direction=in,group=branch,spi=0x00000007 0",
		"direction=in,group=branch,spi=0xc0ffee01 1",
		"direction=out,group=branch,spi=0x00000007 2",
		"direction=out,group=branch,spi=0xc0ffee01 0")
	wantSeries(t, mfs, "mpsa_dataplane_scrape_error", "group=branch 0")
	if mf := mfs["mpsa_sa_packets_total"]; mf.GetType() != dto.MetricType_COUNTER {
		t.Errorf("mpsa_sa_packets_total has type %v, want counter", mf.GetType())
	}
	if _, ok := mfs["go_goroutines"]; !ok {
		t.Errorf("go runtime collector missing: no go_goroutines")
	}
	if _, ok := mfs["process_start_time_seconds"]; !ok {
		t.Errorf("process collector missing: no process_start_time_seconds")
	}

	// The age follows the clock; a rekey moves it to the new SPI only.
	clock.Set(clock.Now().Add(30 * time.Second))
	m.SetGroupSA("branch", 0x0badcafe, clock.Now().Add(-5*time.Second))
	mfs = scrape(t, base)
	wantSeries(t, mfs, "mpsa_group_sa_age_seconds", "group=branch,spi=0x0badcafe 5")
}

// TestAddGroupExportsZeros: a group's series exist from the moment it is
// configured, mpsa_group_members included (0 until a member acknowledges),
// and adding a known group again resets nothing.
func TestAddGroupExportsZeros(t *testing.T) {
	m := newMetrics(t, Options{NoRuntimeCollectors: true})
	base := serve(t, m)
	m.AddGroup("new")
	mfs := scrape(t, base)
	wantSeries(t, mfs, "mpsa_group_members", "group=new 0")
	wantSeries(t, mfs, "mpsa_put_retransmissions_total", "group=new 0")
	wantSeries(t, mfs, "mpsa_rekeys_total", "group=new,reason=lifetime 0", "group=new,reason=manual 0",
		"group=new,reason=member_join 0", "group=new,reason=member_leave 0")

	m.SetMembers("new", 2)
	m.Rekeyed("new", RekeyManual)
	m.AddGroup("new")
	mfs = scrape(t, base)
	wantSeries(t, mfs, "mpsa_group_members", "group=new 2")
	wantSeries(t, mfs, "mpsa_rekeys_total", "group=new,reason=lifetime 0", "group=new,reason=manual 1",
		"group=new,reason=member_join 0", "group=new,reason=member_leave 0")
}

func TestFailingDataPlaneDoesNotFailScrape(t *testing.T) {
	m := newMetrics(t, Options{NoRuntimeCollectors: true})
	base := serve(t, m)
	m.SetMembers("a", 1)
	m.SetTrafficSource("a", func(context.Context) ([]xfrm.Counters, error) {
		return nil, errors.New("netlink: permission denied")
	})
	mfs := scrape(t, base)
	wantSeries(t, mfs, "mpsa_dataplane_scrape_error", "group=a 1")
	wantSeries(t, mfs, "mpsa_group_members", "group=a 1")
	wantSeries(t, mfs, "mpsa_sa_packets_total")
	if _, ok := mfs["go_goroutines"]; ok {
		t.Errorf("NoRuntimeCollectors: go_goroutines exported anyway")
	}
}

func TestSlowDataPlaneIsCutOffAtScrapeTimeout(t *testing.T) {
	m := newMetrics(t, Options{NoRuntimeCollectors: true, ScrapeTimeout: 50 * time.Millisecond})
	base := serve(t, m)
	m.SetTrafficSource("slow", func(ctx context.Context) ([]xfrm.Counters, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	start := time.Now()
	mfs := scrape(t, base)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("scrape took %v; the data plane call was not bounded", d)
	}
	wantSeries(t, mfs, "mpsa_dataplane_scrape_error", "group=slow 1")
}

func TestRemoveGroupDropsItsSeries(t *testing.T) {
	m := newMetrics(t, Options{NoRuntimeCollectors: true})
	base := serve(t, m)
	for _, g := range []string{"keep", "gone"} {
		m.AddGroup(g)
		m.SetMembers(g, 2)
		m.SetGroupSA(g, 1, time.Now())
		m.SetTrafficSource(g, func(context.Context) ([]xfrm.Counters, error) {
			return []xfrm.Counters{{SPI: 1, InPackets: 1}}, nil
		})
	}
	m.RemoveGroup("gone")
	mfs := scrape(t, base)
	for _, name := range []string{"mpsa_group_members", "mpsa_rekeys_total", "mpsa_put_retransmissions_total",
		"mpsa_group_sa_age_seconds", "mpsa_sa_packets_total", "mpsa_dataplane_scrape_error"} {
		got := series(t, mfs, name)
		if len(got) == 0 {
			t.Errorf("%s: no series left for group keep", name)
		}
		for _, s := range got {
			if strings.Contains(s, "group=gone") {
				t.Errorf("%s: series of removed group left: %s", name, s)
			}
		}
	}
	m.ClearGroupSA("keep")
	mfs = scrape(t, base)
	wantSeries(t, mfs, "mpsa_group_sa_age_seconds")
}

func TestNilMetricsIsANoOp(t *testing.T) {
	var m *Metrics
	m.AddGroup("g")
	m.SetGroupSA("g", 1, time.Now())
	m.ClearGroupSA("g")
	m.SetMembers("g", 1)
	m.Rekeyed("g", RekeyManual)
	m.PutRetransmitted("g")
	m.ControlDropped(DropMalformed)
	m.SetTrafficSource("g", nil)
	m.SetDropSource("g", nil)
	m.RemoveGroup("g")
	if m.Registry() != nil {
		t.Errorf("nil Metrics has a registry")
	}
}

func TestServeOnAddressAndShutdown(t *testing.T) {
	m := newMetrics(t, Options{NoRuntimeCollectors: true})
	// Find a free port, then let Serve listen on it by address, as mpsad
	// does with metrics_listen.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, addr, m.Registry()) }()
	var resp *http.Response
	testenv.WaitFor(t, 5*time.Second, "the server on "+addr+" to answer", func() (bool, string) {
		resp, err = http.Get("http://" + addr + "/")
		return err == nil, fmt.Sprint(err)
	})
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `href="/metrics"`) {
		t.Errorf("index page does not link /metrics: %q", body)
	}
	mfs := scrape(t, "http://"+addr)
	wantSeries(t, mfs, "mpsa_control_dropped_total",
		"reason=malformed 0", "reason=no_control_child 0", "reason=no_ike_sa 0",
		"reason=not_protected 0", "reason=spi_mismatch 0", "reason=unexpected 0")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := http.Get("http://" + addr + Path); err == nil {
		t.Errorf("server still answers after shutdown")
	}
}

func TestServeReportsListenError(t *testing.T) {
	m := newMetrics(t, Options{NoRuntimeCollectors: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = Serve(context.Background(), ln.Addr().String(), m.Registry())
	if err == nil || !strings.Contains(err.Error(), "metrics: listen on "+ln.Addr().String()) {
		t.Errorf("Serve on a busy port: %v, want a listen error naming the address", err)
	}
}
