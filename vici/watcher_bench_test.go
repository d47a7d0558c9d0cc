package vici

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	govici "github.com/strongswan/govici/vici"
)

// benchState is a watcher state of n IKE SAs parsed from the captured
// listing, each with its own unique id, remote identity and SPIs, and its
// own copy of every string (as when each comes from its own message).
func benchState(b *testing.B, n int) state {
	b.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "list-sa-controller.json"))
	if err != nil {
		b.Fatal(err)
	}
	m, err := MessageFromJSON(data)
	if err != nil {
		b.Fatal(err)
	}
	sec := m.Get("mpsa").(*govici.Message)
	st := make(state, n)
	for i := range n {
		for k, v := range map[string]string{"uniqueid": strconv.Itoa(i + 1), "remote-id": fmt.Sprintf("member%d.mpsa.test", i),
			"initiator-spi": fmt.Sprintf("%016x", i+1)} {
			if err := sec.Set(k, v); err != nil {
				b.Fatal(err)
			}
		}
		sa, err := ParseSA(m)
		if err != nil {
			b.Fatal(err)
		}
		sa.Conn, sa.LocalID, sa.State = strings.Clone(sa.Conn), strings.Clone(sa.LocalID), IKEState(strings.Clone(string(sa.State)))
		sa.Children = slices.Clone(sa.Children)
		for j := range sa.Children {
			c := &sa.Children[j]
			c.Name, c.Mode, c.Protocol = strings.Clone(c.Name), strings.Clone(c.Mode), strings.Clone(c.Protocol)
			c.State = ChildState(strings.Clone(string(c.State)))
			c.LocalTS, c.RemoteTS = slices.Clone(c.LocalTS), slices.Clone(c.RemoteTS)
		}
		st[sa.UniqueID] = sa
	}
	return st
}

// BenchmarkWatcherEvent is the watcher's work for one child-updown event
// with N IKE SAs known: with OmitSnapshots (what mpsad does) it does not
// depend on N; with snapshots it copies and sorts every IKE SA.
func BenchmarkWatcherEvent(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		st := benchState(b, n)
		for _, omit := range []bool{true, false} {
			name := fmt.Sprintf("N=%d/snapshots", n)
			if omit {
				name = fmt.Sprintf("N=%d/deltas", n)
			}
			b.Run(name, func(b *testing.B) {
				w := NewWatcher(WatcherOptions{Socket: "/nonexistent", OmitSnapshots: omit, OnUpdate: func(Update) {}})
				w.st = st
				sa := st[uint32(n/2)]
				ev := Event{Kind: ChildUp, IKE: sa}
				ev.IKE.Children = sa.Children[:1]
				for b.Loop() {
					w.applyEvent(ev, nil)
				}
			})
		}
	}
}

// BenchmarkWatcherState reports the watcher's memory per IKE SA (the
// parsed IKE SA with its children in the state map): mpsad's share of a
// member beside the engine's (server's BenchmarkEngineMemory).
func BenchmarkWatcherState(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			var per float64
			for b.Loop() {
				before := heapInUse()
				st := benchState(b, n)
				per = float64(heapInUse()-before) / float64(n)
				runtime.KeepAlive(st)
			}
			b.ReportMetric(per, "B/ike-sa")
		})
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
