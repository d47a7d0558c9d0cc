//go:build mpsavm

package vm

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/kernel"
	"github.com/mpsa/mpsa/xfrm/userspace"
)

// TestInteropUserspace puts the kernel's ESP and mpsa's userspace ESP on
// the two ends of the same shared SA: member 1 runs the kernel backend,
// member 2 the userspace backend (TUN and raw ESP), with the same keys.
// Ping and TCP both ways for the four inner/outer family combinations and
// every CBC suite the userspace data plane has, the counters of both, and
// a rollover across them with a UDP stream each way losing nothing. The
// kernel is the independent implementation that proves the userspace
// bytes right.
func TestInteropUserspace(t *testing.T) {
	ms := topology(t, "iop", 2)
	kern, user := ms[0], ms[1]
	for i, tc := range []struct {
		inner6, outer6 bool
		proposal       string
	}{
		{false, false, "aes256-sha256"},
		{true, true, "aes128-sha1"},
		{false, true, "aes192-sha384"},
		{true, false, "aes256-sha512"},
	} {
		t.Run(fmt.Sprintf("inner%d-outer%d-%s", ipv(tc.inner6), ipv(tc.outer6), tc.proposal), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			kb, err := kernel.New(ctx, kernel.Config{NetNS: kern.ns.path(), Underlay: []netip.Addr{kern.underlay(tc.outer6)}})
			if err != nil {
				t.Fatal(err)
			}
			defer kb.Close()
			var ub *userspace.Backend
			if err := user.ns.do(func() (err error) {
				ub, err = userspace.New(ctx, userspace.Config{TUNName: "mpsa0", MTU: 1400,
					Local: []netip.Addr{user.underlay(tc.outer6)}, Logger: slog.New(slog.DiscardHandler)})
				return err
			}); err != nil {
				t.Fatalf("userspace backend: %v", err)
			}
			defer ub.Close()
			dps := []xfrm.DataPlane{kb, ub}
			inner := []bool{tc.inner6}
			sa := newSA(t, uint32(0x30000+i), tc.proposal)
			installEverywhere(t, ctx, ms, dps, sa, inner, tc.outer6)
			sn := kern.ns.sniff(t, "ul0", lanWatch)
			checkTraffic(t, ctx, ms, inner)
			sn.check(t, "the kernel member", true)
			for j, m := range ms {
				cs, err := dps[j].Counters(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if len(cs) != 1 || cs[0].InPackets == 0 || cs[0].OutPackets == 0 || cs[0].InErrors != 0 {
					t.Errorf("member %d: counters %+v, want traffic both ways and no errors", m.i, cs)
				}
			}

			// A rollover across the two implementations, with a
			// datagram every millisecond each way.
			next := newSA(t, sa.SPI+0x100, tc.proposal)
			streams := []*udpStream{
				startUDPStream(t, kern.ns, kern.lan(tc.inner6), user.ns, netip.AddrPortFrom(user.lan(tc.inner6), 9100), time.Millisecond),
				startUDPStream(t, user.ns, user.lan(tc.inner6), kern.ns, netip.AddrPortFrom(kern.lan(tc.inner6), 9100), time.Millisecond),
			}
			// Each step of the rollover happens with datagrams in
			// flight both ways: settle waits for perStep more on
			// every stream (counted, not timed: the guest is
			// emulated and the host may be busy).
			const perStep = 50
			steps := 0
			settle := func() {
				steps++
				for k, s := range streams {
					if !s.waitSent(perStep, 30*time.Second) {
						t.Fatalf("stream %d: not %d datagrams sent within 30 s", k, perStep)
					}
				}
			}
			settle()
			for j := range ms {
				if err := dps[j].InstallInbound(ctx, next); err != nil {
					t.Fatal(err)
				}
			}
			settle()
			for j := range ms {
				if err := dps[j].SetOutbound(ctx, next.SPI); err != nil {
					t.Fatal(err)
				}
				settle()
			}
			for j := range ms {
				if err := dps[j].Remove(ctx, sa.SPI); err != nil {
					t.Fatal(err)
				}
			}
			settle()
			for k, s := range streams {
				sent, got := s.finish(5 * time.Second)
				if sent < steps*perStep || got != sent {
					t.Errorf("stream %d across the rollover: sent %d, received %d", k, sent, got)
					for j, m := range ms {
						cs, _ := dps[j].Counters(ctx)
						t.Logf("member %d: counters %+v; non-zero kernel counters:\n%s", m.i, cs, m.ns.netStats())
					}
					t.Logf("userspace drops: %+v", ub.Drops())
				}
				t.Logf("stream %d: %d of %d datagrams across the rollover", k, got, sent)
			}
			for j, m := range ms {
				cs, _ := dps[j].Counters(ctx)
				if len(cs) != 1 || cs[0].SPI != next.SPI || cs[0].InPackets == 0 {
					t.Errorf("member %d after the rollover: %+v, want traffic on %08x only", m.i, cs, next.SPI)
				}
			}
		})
	}
}
