package server

import (
	"fmt"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/mpsa/mpsa/vici"
)

// The engine at scale, by simulation: a real controller engine, members
// simulated by the fleet (fleet_test.go), an in-memory wire and an
// injected clock. `make bench-engine` runs these; docs/scale.md has the
// figures. Each reports its own metrics:
//
//   - BenchmarkRekeyFanout: one rekey pushed to every member and
//     acknowledged by all: ctl-s/rekey is the time spent in the
//     controller's code (on its one goroutine), cpu-s/rekey the process's
//     CPU time (the controller, the simulated members' answers and the
//     garbage collector), ns/member the controller's time per member,
//     sim-s/rekey how long the fan-out takes at push_rate.
//   - BenchmarkJoinLeave: one member joins (its push is sent and
//     acknowledged), then leaves: ns/join, ns/ack, ns/leave.
//   - BenchmarkEngineMemory: the engine's heap per member with every
//     member joined and acknowledged (B/member).
//   - BenchmarkResync: a VICI resync that finds nothing changed
//     (ns/ike-sa), the periodic O(N) cost.
//   - BenchmarkControlCheck: with N IKE SAs reported without their
//     control child, one more appears and is reported after its grace
//     (ns/op: the problem's life; it does not grow with N).

// fleetSizes are the simulated group sizes.
var fleetSizes = []int{1000, 10000, 100000}

// benchConf paces at 10,000 pushes per second, so that 100,000 members
// fit the default rollover window (30 s) in 10 s; rekey_on_leave is off so
// that the join and leave benchmark measures a join and a leave, not the
// rekeys they would schedule.
var benchConf = fleetConf("push_rate = 10000", "push_burst = 1000")

func BenchmarkRekeyFanout(b *testing.B) {
	for _, n := range fleetSizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			f := newFleet(b, benchConf, n, nil)
			f.joinAll(0, n)
			g := f.group()
			var busy, cpu, sim time.Duration
			for b.Loop() {
				f.advance(f.now.Add(time.Minute)) // the bucket fills up
				busy0, cpu0 := f.busy, processCPU()
				f.timed(func() {
					if _, err := g.rekey(f.now, "manual"); err != nil {
						b.Fatal(err)
					}
				})
				sim += f.settle(f.now.Add(time.Hour))
				busy += f.busy - busy0
				cpu += processCPU() - cpu0
				if g.current != n {
					b.Fatalf("%d of %d members on the new SA", g.current, n)
				}
			}
			rekeys := float64(b.N)
			b.ReportMetric(busy.Seconds()/rekeys, "ctl-s/rekey")
			b.ReportMetric(cpu.Seconds()/rekeys, "cpu-s/rekey")
			b.ReportMetric(float64(busy.Nanoseconds())/rekeys/float64(n), "ns/member")
			b.ReportMetric(sim.Seconds()/rekeys, "sim-s/rekey")
		})
	}
}

func BenchmarkJoinLeave(b *testing.B) {
	conf := fleetConfWith("rekey_on_leave = no", "push_rate = 10000", "push_burst = 1000")
	for _, n := range fleetSizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			f := newFleet(b, conf, n+1, nil)
			f.joinAll(0, n)
			if g := f.group(); g.current != n || g.cfg.RekeyOnLeave {
				b.Fatalf("%d members on the SA, rekey_on_leave %v", g.current, g.cfg.RekeyOnLeave)
			}
			var join, ack, leave time.Duration
			for b.Loop() {
				f.now = f.now.Add(10 * time.Millisecond) // 100 tokens
				t0 := f.busy
				f.join(n)
				if len(f.sent) != 1 {
					b.Fatalf("a join sent %d datagrams", len(f.sent))
				}
				t1 := f.busy
				f.answer()
				t2 := f.busy
				f.leave(n)
				join, ack, leave = join+t1-t0, ack+t2-t1, leave+f.busy-t2
			}
			if g := f.group(); len(g.members) != n || g.current != n {
				b.Fatalf("%d members, %d on the SA; want %d", len(g.members), g.current, n)
			}
			ops := float64(b.N)
			b.ReportMetric(float64(join.Nanoseconds())/ops, "ns/join")
			b.ReportMetric(float64(ack.Nanoseconds())/ops, "ns/ack")
			b.ReportMetric(float64(leave.Nanoseconds())/ops, "ns/leave")
		})
	}
}

func BenchmarkEngineMemory(b *testing.B) {
	for _, n := range fleetSizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			var per float64
			for b.Loop() {
				f := newFleet(b, benchConf, n, nil)
				before := heapAlloc()
				f.joinAll(0, n)
				f.sent = nil
				after := heapAlloc()
				if f.group().current != n {
					b.Fatalf("%d of %d members on the SA", f.group().current, n)
				}
				per = float64(after-before) / float64(n)
				runtime.KeepAlive(f)
			}
			b.ReportMetric(per, "B/member")
		})
	}
}

// BenchmarkResync is a VICI resync (at every connect, every 60 s, and
// after dropped events) that finds nothing changed: the one periodic cost
// that grows with the fleet, O(N) once a minute.
func BenchmarkResync(b *testing.B) {
	for _, n := range fleetSizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			f := newFleet(b, benchConf, n, nil)
			f.joinAll(0, n)
			u := vici.Update{Cause: vici.CauseResync, Snapshot: vici.Snapshot{Connected: true}, Changed: f.sas}
			for b.Loop() {
				f.s.onUpdate(f.ctx, u)
			}
			if len(f.sent) != 0 || f.group().current != n {
				b.Fatalf("a resync without a change sent %d datagrams; %d members on the SA", len(f.sent), f.group().current)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/ike-sa")
		})
	}
}

// BenchmarkFleetAnswer is the simulated members' share of
// BenchmarkRekeyFanout's cpu-s/rekey: per datagram, the copy the
// in-memory wire makes and a member's answer.
func BenchmarkFleetAnswer(b *testing.B) {
	f := newFleet(b, benchConf, 1, nil)
	f.join(0)
	if len(f.sent) != 1 {
		b.Fatalf("%d datagrams", len(f.sent))
	}
	d := f.sent[0]
	for b.Loop() {
		f.sent = f.sent[:0]
		f.Send(d.Data, d.Src.Addr(), netip.AddrPortFrom(d.Dst, d.Src.Port()))
		response(b, f.sent[0])
	}
}

// heapAlloc is the heap in use after a collection.
func heapAlloc() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// processCPU is the CPU time the process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkControlCheck: a controller holds N reported control problems
// (IKE SAs without their control child) when one more appears, is
// reported after its grace, and goes.
func BenchmarkControlCheck(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("problems=%d", n), func(b *testing.B) {
			f := newFleet(b, benchConf, n+1, nil)
			g := f.group()
			missing := make([]vici.IKESA, n+1)
			for i := range missing {
				missing[i] = f.sas[i]
				missing[i].Children = nil
			}
			for i := range n {
				g.controlMissing(f.ctx, f.now, missing[i])
			}
			f.advance(f.now.Add(controlGrace))
			for b.Loop() {
				g.controlMissing(f.ctx, f.now, missing[n])
				f.now = f.now.Add(controlGrace)
				g.onCheck(f.ctx, f.now)
				g.controlFine(missing[n].UniqueID, true)
			}
			if st := g.status(f.ctx); len(st.ControlProblems) != n {
				b.Fatalf("%d problems, want %d", len(st.ControlProblems), n)
			}
		})
	}
}
