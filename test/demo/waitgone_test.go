package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/server"
)

// fakeMember is a member's status socket whose inbound SPIs lose old at
// removeAt (never, if zero).
type fakeMember struct {
	old, cur string
	removeAt time.Time
}

func (f *fakeMember) Status(context.Context) (server.Status, error) {
	in := []string{f.old, f.cur}
	if !f.removeAt.IsZero() && !time.Now().Before(f.removeAt) {
		in = []string{f.cur}
	}
	return server.Status{Role: "member", Groups: []server.GroupStatus{{Name: "lab", SPI: f.cur, OutboundSPI: f.cur, InboundSPIs: in}}}, nil
}

func (f *fakeMember) Rekey(context.Context, string) (string, error) {
	return "", errors.New("not a controller")
}

// fakeDemo is a demo whose CPEs are fake status sockets that drop the old
// SPI the given time after now (a negative time: never).
func fakeDemo(t *testing.T, removeAfter ...time.Duration) (*demo, time.Time) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	now := time.Now()
	d := &demo{nodes: []*node{{name: "controller", dir: t.TempDir()}}}
	for i, after := range removeAfter {
		n := &node{name: fmt.Sprintf("cpe%d", i+1), dir: t.TempDir()}
		f := &fakeMember{old: "0x00001111", cur: "0x00002222"}
		if after >= 0 {
			f.removeAt = now.Add(after)
		}
		up := make(chan error, 1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			server.ServeStatus(ctx, n.sock(), f, up)
		}()
		t.Cleanup(func() { cancel(); <-done })
		if err := <-up; err != nil {
			t.Fatal(err)
		}
		d.nodes = append(d.nodes, n)
	}
	return d, now
}

// TestWaitGone: the demo's check that the old SA leaves every CPE after
// rollover2, and neither before it nor too late.
func TestWaitGone(t *testing.T) {
	const roll2, grace = 300 * time.Millisecond, time.Second
	t.Run("after rollover2", func(t *testing.T) {
		d, rekeyed := fakeDemo(t, roll2, roll2+50*time.Millisecond, roll2+100*time.Millisecond)
		gone, err := d.waitGone(context.Background(), "0x00001111", rekeyed, roll2, grace)
		if err != nil {
			t.Fatal(err)
		}
		if gone < roll2+100*time.Millisecond || gone > roll2+grace {
			t.Fatalf("gone after %v, want from %v (the last CPE) to %v", gone, roll2+100*time.Millisecond, roll2+grace)
		}
	})
	t.Run("stays on one CPE", func(t *testing.T) {
		d, rekeyed := fakeDemo(t, roll2, -1, roll2)
		_, err := d.waitGone(context.Background(), "0x00001111", rekeyed, roll2, grace)
		if err == nil || !strings.Contains(err.Error(), "not gone") || !strings.Contains(err.Error(), "cpe2 still receive") {
			t.Fatalf("error %v, want one naming cpe2", err)
		}
		if el := time.Since(rekeyed); el < roll2+grace {
			t.Fatalf("gave up after %v, before rollover2 and the grace time", el)
		}
	})
	t.Run("before rollover2", func(t *testing.T) {
		d, rekeyed := fakeDemo(t, 0, 0, 0)
		_, err := d.waitGone(context.Background(), "0x00001111", rekeyed, roll2, grace)
		if err == nil || !strings.Contains(err.Error(), "before rollover2") {
			t.Fatalf("error %v, want one saying it went before rollover2", err)
		}
	})
	t.Run("no status", func(t *testing.T) {
		d, rekeyed := fakeDemo(t, 0)
		d.nodes = append(d.nodes, &node{name: "cpe2", dir: t.TempDir()})
		_, err := d.waitGone(context.Background(), "0x00001111", rekeyed, roll2, grace)
		if err == nil || !strings.Contains(err.Error(), "status of cpe2") {
			t.Fatalf("error %v, want one about cpe2's status", err)
		}
	})
}
