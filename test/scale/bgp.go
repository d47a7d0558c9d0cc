package scale

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/mpsa/mpsa/internal/bgptest"
)

// In BGP mode the controller's group has a route reflector (bgp { } with
// one policy rule for the farm), and the BGP phase gives each of the N
// members a speaker in the farm's namespace: a bgptest.LightClient that
// connects from the member's control address to the controller's, through
// the member's control child in the farm's charon (kernel-libipsec, as
// the control exchange), and advertises BGPPrefixes prefixes with the
// farm's IKE address as next hop. Light clients, not mpsad's bgp.Member:
// a thousand GoBGP speakers in one process would each keep the whole
// table of 4,000 routes; the reflector, the part that grows with the
// fleet, is the real one in the controller's mpsad.

// BGPResult is the BGP phase: the N members' speakers start together and
// the reflector converges; and, after Restart, its resynchronization.
type BGPResult struct {
	// Prefixes is what each member must learn: the others' BGPPrefixes
	// prefixes each.
	Prefixes int
	// Sessions is from the start of the N speakers until the last one
	// had its session established and its routes sent.
	Sessions time.Duration
	// Converged is from the start until every member had every other
	// member's prefixes; AfterLast from the last session until then.
	Converged, AfterLast time.Duration
	// Accepted and Rejected are the prefixes the reflector's policy
	// accepted and rejected, as its status says at the end (mpsad's
	// reflector).
	Accepted, Rejected int
	// Reflector is "mpsad" or "frr"; ReflectorCPU the CPU time its
	// process used in the phase.
	Reflector    string
	ReflectorCPU time.Duration
	Phase
	// Resync is from the start of the restarted controller's mpsad until
	// every member had a new session and every other member's prefixes
	// again, and the reflector's End-of-RIB.
	Resync time.Duration
}

// dialConcurrency bounds the speakers dialling at once: each dial runs on
// a thread of its own, switched into the farm's namespace.
const dialConcurrency = 32

// BGP starts the N members' speakers (after Join) and waits until every
// one has every other's prefixes.
func (h *Harness) BGP(ctx context.Context) (BGPResult, error) {
	var r BGPResult
	if !h.o.BGP || h.join == nil || h.bgp != nil {
		return r, errors.New("scale: BGP runs once, after Join, in BGP mode")
	}
	ctx, cancel := context.WithTimeout(ctx, h.o.Timeout)
	defer cancel()
	before, err := h.take(ctx)
	if err != nil {
		return r, err
	}
	r.Reflector = "mpsad"
	refl := h.ctl
	if h.o.FRR {
		r.Reflector, refl = "frr", h.frr
	}
	cpu0, err := refl.usage()
	if err != nil {
		return r, err
	}
	r.Prefixes = BGPPrefixes * (h.o.Members - 1)
	h.say("bgp: %d speakers connect to the route reflector and advertise %d prefixes each", h.o.Members, BGPPrefixes)
	sem := make(chan struct{}, dialConcurrency)
	rr := netip.AddrPortFrom(ctlControl, 179)
	ups := make([]chan struct{}, h.o.Members)
	start := time.Now()
	for i := 1; i <= h.o.Members; i++ {
		local := MemberControl(i)
		c := &bgptest.LightClient{ASN: bgpASN, Addr: local, NextHop: farmUnderlay, Prefixes: MemberPrefixes(i),
			Dial: func(ctx context.Context) (conn net.Conn, err error) {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				defer func() { <-sem }()
				err = h.farmNS.Do(func() error {
					d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0)), Timeout: 10 * time.Second}
					conn, err = d.DialContext(ctx, "tcp", rr.String())
					return err
				})
				return conn, err
			}}
		ups[i-1] = make(chan struct{})
		c.Start(context.Background(), ups[i-1])
		h.speakers = append(h.speakers, c)
	}
	for i, up := range ups {
		select {
		case <-up:
		case <-ctx.Done():
			return r, fmt.Errorf("scale: bgp: speaker %d has no session: %w (last: %s)", i+1, ctx.Err(), h.speakers[i].LastError())
		}
	}
	last := time.Now()
	r.Sessions = last.Sub(start)
	h.say("bgp: %d sessions established after %.2f s", h.o.Members, r.Sessions.Seconds())
	at, err := h.waitSpeakers(ctx, "every member to learn every other's prefixes", r.Prefixes, 1)
	if err != nil {
		return r, err
	}
	r.Converged, r.AfterLast = at.Sub(start), max(at.Sub(last), 0)
	after, err := h.take(ctx)
	if err != nil {
		return r, err
	}
	r.Phase = phase(before, after)
	cpu1, err := refl.usage()
	if err != nil {
		return r, err
	}
	r.ReflectorCPU = cpu1.CPU - cpu0.CPU
	st, err := h.ControllerStatus(ctx)
	if err != nil {
		return r, err
	}
	if b := groupOf(st).BGP; b != nil {
		r.Accepted, r.Rejected = b.AcceptedPrefixes, b.RejectedPrefixes
	}
	h.bgp = &r
	h.say("bgp: every member had the %d prefixes of the others %.2f s after the speakers started (%.2f s after the last session)",
		r.Prefixes, r.Converged.Seconds(), r.AfterLast.Seconds())
	return r, nil
}

// waitSpeakers waits until every speaker is in its sessions-th session or
// later and has received want prefixes in it (with sessions > 1, and the
// End-of-RIB), and returns when that was seen.
func (h *Harness) waitSpeakers(ctx context.Context, what string, want, sessions int) (time.Time, error) {
	for {
		done, behind := 0, -1
		for i, c := range h.speakers {
			if c.Sessions() >= int64(sessions) && c.Got() >= int64(want) && (sessions == 1 || c.EoR()) {
				done++
			} else if behind < 0 {
				behind = i
			}
		}
		now := time.Now()
		if done == len(h.speakers) {
			return now, nil
		}
		select {
		case <-ctx.Done():
			c := h.speakers[behind]
			return now, fmt.Errorf("scale: bgp: waiting for %s: %w; %d of %d done; member %d: session %d, %d prefixes, last error %s",
				what, ctx.Err(), done, len(h.speakers), behind+1, c.Sessions(), c.Got(), c.LastError())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// bgpResync waits, after the controller's mpsad was restarted at start,
// until every speaker has a new session with every other's prefixes.
func (h *Harness) bgpResync(ctx context.Context, start time.Time) error {
	if h.bgp == nil {
		return errors.New("scale: in BGP mode, Restart comes after BGP")
	}
	at, err := h.waitSpeakers(ctx, "every member to learn every other's prefixes from the restarted reflector", h.bgp.Prefixes, 2)
	if err != nil {
		return err
	}
	h.bgp.Resync = at.Sub(start)
	h.say("bgp: every member had the others' prefixes again %.2f s after the new mpsad started", h.bgp.Resync.Seconds())
	return nil
}

// stopSpeakers ends the BGP speakers (at clean-up).
func (h *Harness) stopSpeakers() {
	for _, c := range h.speakers {
		c.Stop()
	}
}

// frrConf makes FRR's bgpd the farm's route reflector: every member's
// control address may connect (dynamic neighbours), graceful restart, no
// next-hop-self.
func frrConf() string {
	return fmt.Sprintf(`frr defaults traditional
hostname reflector
!
router bgp %[1]d
 bgp router-id %[2]s
 bgp graceful-restart
 bgp listen limit 65535
 neighbor farm peer-group
 neighbor farm remote-as %[1]d
 neighbor farm update-source %[2]s
 bgp listen range %[3]s peer-group farm
 address-family ipv4 unicast
  neighbor farm route-reflector-client
 exit-address-family
!
`, bgpASN, ctlControl, memberNet)
}

// startFRR starts bgpd in the controller's namespace (Options.FRR),
// without zebra, with its files in dir.
func (h *Harness) startFRR(dir string) error {
	conf := filepath.Join(dir, "bgpd.conf")
	if err := os.WriteFile(conf, []byte(frrConf()), 0o644); err != nil {
		return err
	}
	p, err := startProc(h.ctlNS, "FRR bgpd", filepath.Join(dir, "bgpd.log"), bgptest.BGPD, "-f", conf, "-i", filepath.Join(dir, "bgpd.pid"),
		"--vty_socket", dir, "-Z", "-P", "0", "-S", "--log", "stdout", "--log-level", "warnings")
	if err != nil {
		return err
	}
	h.frr = p
	return nil
}
