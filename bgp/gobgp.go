package bgp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Defaults of the timers; docs/bgp.md explains each.
const (
	// DefaultPort is BGP's TCP port.
	DefaultPort = 179
	// DefaultHoldTime is the BGP hold time each side proposes (RFC 4271's
	// suggestion); the session uses the smaller of the two.
	DefaultHoldTime = 90 * time.Second
	// DefaultRestartTime is the graceful restart time (RFC 4724) each
	// side advertises: how long its peer keeps its routes when the
	// session breaks without a clean close.
	DefaultRestartTime = 120 * time.Second
	// DefaultStaleTime is how long a member keeps the routes it learned
	// while its session with the controller is down.
	DefaultStaleTime = time.Hour
	// DefaultDeferralTime is how long a reflector that has just started
	// waits for the members' End-of-RIB before it sends them routes
	// (RFC 4724's selection deferral).
	DefaultDeferralTime = 30 * time.Second
	// syncWait is how long a member waits, after its session came up
	// with a controller that does not do graceful restart (no End-of-RIB
	// is coming), before it drops the stale routes not advertised again.
	syncWait = 5 * time.Second
	// connectRetry is GoBGP's retry interval for the member's outgoing
	// connection (its minimum is 2 s).
	connectRetry = 2
)

// setDefault sets *p to def when it is the zero value.
func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// families are the address families every session carries.
func families() []bgppkt.Family { return []bgppkt.Family{bgppkt.RF_IPv4_UC, bgppkt.RF_IPv6_UC} }

// afiSafis configures the IPv4 and IPv6 unicast families with graceful
// restart.
func afiSafis() []*api.AfiSafi {
	mk := func(afi api.Family_Afi) *api.AfiSafi {
		return &api.AfiSafi{
			Config:            &api.AfiSafiConfig{Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
		}
	}
	return []*api.AfiSafi{mk(api.Family_AFI_IP), mk(api.Family_AFI_IP6)}
}

// seconds rounds d up to whole seconds for GoBGP's second-granular
// timers.
func seconds(d time.Duration) uint32 {
	return uint32((d + time.Second - 1) / time.Second)
}

// speaker is a GoBGP server with its logger.
type speaker struct {
	*server.BgpServer
	quiet *atomic.Bool
}

// newSpeaker creates and serves a GoBGP server that logs through log: its
// Info lines (a line per peer state change and configuration step) become
// Debug, its warnings and errors stay as they are.
func newSpeaker(log *slog.Logger) speaker {
	lvl := &slog.LevelVar{}
	lvl.Set(slog.LevelDebug)
	quiet := &atomic.Bool{}
	s := server.NewBgpServer(server.LoggerOption(slog.New(demote{h: log.Handler(), quiet: quiet}).With("component", "gobgp"), lvl))
	go s.Serve()
	return speaker{BgpServer: s, quiet: quiet}
}

// speakerEvent is what GoBGP's watcher reports: paths received, an
// End-of-RIB, or a session state change.
type speakerEvent struct {
	paths []*apiutil.Path
	eor   *apiutil.Path
	peer  *apiutil.WatchEventMessage_PeerEvent
}

// watch sends the speaker's path updates, End-of-RIBs and session state
// changes to evs until the returned cancel is called (never blocking
// after it); opts choose what GoBGP reports beside the peer events.
func (s speaker) watch(evs chan<- speakerEvent, opts ...server.WatchOption) (context.CancelFunc, error) {
	ctx, cancel := context.WithCancel(context.Background())
	send := func(ev speakerEvent) {
		select {
		case evs <- ev:
		case <-ctx.Done():
		}
	}
	err := s.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnPathUpdate: func(paths []*apiutil.Path, _ time.Time) { send(speakerEvent{paths: paths}) },
		OnPathEor:    func(p *apiutil.Path, _ time.Time) { send(speakerEvent{eor: p}) },
		OnPeerUpdate: func(p *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
			if p.Type == apiutil.PEER_EVENT_STATE {
				send(speakerEvent{peer: p})
			}
		},
	}, append([]server.WatchOption{server.WatchPeer()}, opts...)...)
	if err != nil {
		cancel()
		return nil, err
	}
	return cancel, nil
}

// checkSpeaker checks what every speaker's configuration needs: an AS
// number, and a router ID that is IPv4 when one is given. what names the
// speaker in the error.
func checkSpeaker(what string, asn uint32, routerID netip.Addr) error {
	if asn == 0 {
		return fmt.Errorf("%s: no AS number", what)
	}
	if routerID.IsValid() && !routerID.Is4() {
		return fmt.Errorf("%s: router ID %s is not an IPv4 address", what, routerID)
	}
	return nil
}

// stop closes every session without a NOTIFICATION, so that peers that
// negotiated graceful restart keep this speaker's routes (RFC 4724), and
// stops the server.
func (s speaker) stop(log *slog.Logger) {
	if err := s.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: true}); err != nil {
		log.Warn("bgp: stop", "err", err)
	}
	// Stop stops what StopBgp leaves (the BFD server's goroutine); its
	// own StopBgp then fails with "not running", which is not news.
	s.quiet.Store(true)
	s.Stop()
}

// demote is a slog.Handler that passes GoBGP's records on with Info
// lowered to Debug, and none once quiet is set.
type demote struct {
	h     slog.Handler
	quiet *atomic.Bool
}

func (d demote) Enabled(ctx context.Context, l slog.Level) bool {
	if d.quiet.Load() {
		return false
	}
	if l == slog.LevelInfo {
		l = slog.LevelDebug
	}
	return d.h.Enabled(ctx, l)
}

func (d demote) Handle(ctx context.Context, r slog.Record) error {
	if d.quiet.Load() {
		return nil
	}
	if r.Level == slog.LevelInfo {
		r.Level = slog.LevelDebug
	}
	return d.h.Handle(ctx, r)
}

func (d demote) WithAttrs(a []slog.Attr) slog.Handler { return demote{d.h.WithAttrs(a), d.quiet} }
func (d demote) WithGroup(n string) slog.Handler      { return demote{d.h.WithGroup(n), d.quiet} }

// routerID returns the BGP identifier: the configured one, else the first
// IPv4 address among candidates, else a hash of the first valid
// candidate. It must be unique among the members of a group (a member
// drops reflected routes whose ORIGINATOR_ID is its own), which IPv4
// control addresses are; a hash of an IPv6 one is very probably.
func routerID(configured netip.Addr, candidates ...netip.Addr) (netip.Addr, error) {
	if configured.IsValid() {
		if !configured.Is4() {
			return netip.Addr{}, fmt.Errorf("router ID %s is not an IPv4 address", configured)
		}
		return configured, nil
	}
	for _, c := range candidates {
		if c = c.Unmap(); c.Is4() && !c.IsUnspecified() {
			return c, nil
		}
	}
	for _, c := range candidates {
		if c.IsValid() {
			h := fnv.New32a()
			h.Write(c.AsSlice())
			var b [4]byte
			// 10.0.0.0/8 keeps clear of 0.0.0.0 and 255.255.255.255.
			binary.BigEndian.PutUint32(b[:], 10<<24|h.Sum32()&0xffffff)
			return netip.AddrFrom4(b), nil
		}
	}
	return netip.Addr{}, errors.New("no address to derive a router ID from; configure router_id")
}

// family is the GoBGP family of prefix p.
func family(p netip.Prefix) bgppkt.Family {
	if p.Addr().Is4() {
		return bgppkt.RF_IPv4_UC
	}
	return bgppkt.RF_IPv6_UC
}

// advertisement is the path that advertises prefix with next hop nh: the
// NEXT_HOP attribute for IPv4 over an IPv4 next hop, else MP_REACH_NLRI
// (an IPv6 next hop for IPv4, RFC 8950; an IPv4-mapped IPv6 next hop for
// IPv6 over IPv4, RFC 4798).
func advertisement(prefix netip.Prefix, nh netip.Addr, withdraw bool) (*apiutil.Path, error) {
	nlri, err := bgppkt.NewIPAddrPrefix(prefix)
	if err != nil {
		return nil, fmt.Errorf("prefix %s: %w", prefix, err)
	}
	attrs := []bgppkt.PathAttributeInterface{bgppkt.NewPathAttributeOrigin(bgppkt.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if prefix.Addr().Is4() && nh.Is4() {
		a, err := bgppkt.NewPathAttributeNextHop(nh)
		if err != nil {
			return nil, fmt.Errorf("next hop %s: %w", nh, err)
		}
		attrs = append(attrs, a)
	} else {
		a, err := bgppkt.NewPathAttributeMpReachNLRI(family(prefix), []bgppkt.PathNLRI{{NLRI: nlri}}, nh)
		if err != nil {
			return nil, fmt.Errorf("next hop %s: %w", nh, err)
		}
		attrs = append(attrs, a)
	}
	return &apiutil.Path{Family: family(prefix), Nlri: nlri, Attrs: attrs, Withdrawal: withdraw}, nil
}

// pathPrefix returns the prefix of a unicast path.
func pathPrefix(p *apiutil.Path) (netip.Prefix, bool) {
	if n, ok := p.Nlri.(*bgppkt.IPAddrPrefix); ok && n.Prefix.IsValid() {
		pr := n.Prefix
		if pr.Addr().Is4In6() {
			return netip.Prefix{}, false
		}
		return pr.Masked(), true
	}
	return netip.Prefix{}, false
}

// nextHop returns the BGP next hop of a path, IPv4-mapped IPv6 addresses
// unmapped, the zero Addr when there is none.
func nextHop(p *apiutil.Path) netip.Addr {
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *bgppkt.PathAttributeNextHop:
			return a.Value.Unmap()
		case *bgppkt.PathAttributeMpReachNLRI:
			return a.Nexthop.Unmap()
		}
	}
	return netip.Addr{}
}

// usableNextHop reports whether a is an address ESP can be sent to.
func usableNextHop(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() && !a.IsLinkLocalUnicast()
}
