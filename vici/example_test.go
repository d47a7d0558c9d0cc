package vici_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/mpsa/mpsa/vici"
)

// The controller side of mpsad: follow charon, and accept a control
// datagram only from the remote control address of an established member
// whose control child is installed and whose IKE SPIs match the header.
func ExampleWatcher() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := vici.NewWatcher(vici.WatcherOptions{
		Socket: "/var/run/charon.vici",
		OnUpdate: func(u vici.Update) {
			if u.Cause == vici.CauseEvent && u.Event.Kind == vici.IKEDown {
				slog.Info("member left", "id", u.Event.IKE.RemoteID)
			}
		},
	})
	go w.Run(ctx) // returns when ctx is done

	// For each datagram received on charon's TUN device from src with
	// header SPIs spiI, spiR:
	accept := func(src netip.Addr, spiI, spiR uint64) bool {
		c, ok := w.Snapshot().FindControl("mpsa", "mpsa-ctl", src)
		return ok && c.IKE.MatchSPIs(spiI, spiR)
	}
	fmt.Println(accept(netip.MustParseAddr("10.98.1.1"), 1, 2))
}
