package server

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/mpsa/mpsa/api"
	"github.com/mpsa/mpsa/bgp"
	"github.com/mpsa/mpsa/internal/metrics"
	"github.com/mpsa/mpsa/swanctl"
)

// What the status, `mpsactl routes` and the metrics show of BGP is asked
// of the speakers outside the loop: the loop hands out the components,
// and the caller's goroutine waits for them (at most bgpStatusTimeout
// for the status), so that a reflector busy with GoBGP never holds the
// loop.

// bgpView is what the loop hands out of a group for its BGP status.
type bgpView struct {
	mem  *bgp.Member
	refl *bgp.Reflector
	// ctl is a member's controller address while the session may run.
	ctl netip.Addr
	// bound is the reflector's listener interface.
	bound string
	// static are a member's static routes and when each took its peer;
	// used the prefixes of its effective peer table with their source.
	static map[netip.Prefix]bgp.Route
	used   map[netip.Prefix]string
}

// view is what status and routes need of the group's BGP, taken on the
// loop; ok is false for a group without BGP.
func (g *memGroup) view() (bgpView, bool) {
	v := bgpView{static: map[netip.Prefix]bgp.Route{}, used: map[netip.Prefix]string{}}
	for _, p := range g.peers[sourceStatic] {
		v.static[p.Prefix] = bgp.Route{Prefix: p.Prefix, Peer: p.Underlay, Origin: bgp.OriginStatic, Since: g.staticSince[p.Prefix]}
	}
	for _, src := range sourceOrder(g.peers) {
		for _, p := range g.peers[src] {
			if _, ok := v.used[p.Prefix]; !ok {
				v.used[p.Prefix] = src
			}
		}
	}
	if g.bgp == nil {
		return v, false
	}
	v.mem, v.ctl = g.bgp.sp, g.bgp.ctl
	return v, true
}

func (g *ctlGroup) view() (bgpView, bool) {
	if g.bgp == nil {
		return bgpView{}, false
	}
	return bgpView{refl: g.bgp.r, bound: g.bgp.boundName}, true
}

// fillBGP adds the BGP summaries to st, asking the speakers outside the
// loop.
func (s *Server) fillBGP(ctx context.Context, st *api.Status, views map[int]bgpView) {
	for i, v := range views {
		sum := &api.BGPSummary{}
		switch {
		case v.mem != nil:
			var ms bgp.MemberStatus
			var err error
			if !within(ctx, bgpStatusTimeout, func() { ms, err = v.mem.Status() }) {
				sum.LastError = "the BGP speaker did not answer in time"
				break
			}
			if err != nil {
				sum.LastError = err.Error()
				break
			}
			sum.Session, sum.Controller, sum.LastError = ms.Session, addrString(ms.Controller), ms.LastError
			for _, r := range ms.Learned {
				if r.Ignored == "" {
					sum.LearnedRoutes++
				}
				if r.Stale {
					sum.StaleRoutes++
				}
			}
		case v.refl != nil:
			var cs []bgp.MemberCounters
			var err error
			if !within(ctx, bgpStatusTimeout, func() { cs, err = v.refl.Counters() }) {
				sum.LastError = "the route reflector did not answer in time (busy sending routes)"
				break
			}
			if err != nil {
				sum.LastError = err.Error()
				break
			}
			sum.Members = len(cs)
			for _, c := range cs {
				sum.AcceptedPrefixes += c.AcceptedNow
				sum.RejectedPrefixes += c.RejectedNow
				sum.RejectedTotal += c.Rejected
			}
		default:
			// A controller group whose reflector waits for its first
			// member, or a member whose speaker could not start.
			sum.Session = "down"
		}
		st.Groups[i].BGP = sum
	}
}

// Routes implements api.RoutesAPI.
func (s *Server) Routes(ctx context.Context, name string) (api.Routes, error) {
	var (
		v      bgpView
		has    bool
		found  bool
		role   swanctl.Role
		cfgErr error
	)
	if err := s.callCtx(ctx, func() {
		role = s.cfg.Role
		g := s.group(name)
		if g == nil {
			cfgErr = fmt.Errorf("group %q: %w", name, api.ErrNoGroup)
			return
		}
		found = true
		v, has = g.view()
	}); err != nil {
		return api.Routes{}, err
	}
	if !found {
		return api.Routes{}, cfgErr
	}
	out := api.Routes{Group: name, Role: string(role), BGP: has}
	now := s.now()
	switch {
	case role == swanctl.RoleController:
		if v.refl == nil {
			if has {
				out.Reflector = &api.Reflector{Members: []api.ReflectorMember{}}
			}
			return out, nil
		}
		st, err := v.refl.Status()
		if err != nil {
			return api.Routes{}, err
		}
		out.Reflector = reflectorView(st, v.bound)
	default:
		var learned []bgp.Route
		if v.mem != nil {
			ms, err := v.mem.Status()
			if err != nil {
				return api.Routes{}, err
			}
			learned = ms.Learned
			out.Session = &api.BGPSession{Controller: addrString(ms.Controller), State: ms.Session, LastError: ms.LastError, Advertised: []api.Advertised{}}
			if !ms.Since.IsZero() {
				t := ms.Since
				out.Session.Since = &t
			}
			for _, a := range ms.Advertised {
				out.Session.Advertised = append(out.Session.Advertised, api.Advertised{Prefix: a.Prefix.String(), NextHop: a.Peer.String()})
			}
		}
		out.Routes = memberRoutes(v, learned, now)
	}
	return out, nil
}

// memberRoutes is a member's peer table as `mpsactl routes` shows it: the
// static routes, then the learned ones, by prefix; a learned route whose
// prefix the table takes from another source is shadowed.
func memberRoutes(v bgpView, learned []bgp.Route, now time.Time) []api.Route {
	rs := slices.Collect(maps.Values(v.static))
	for _, r := range learned {
		if src, ok := v.used[r.Prefix]; ok && src != sourceBGP && r.Ignored == "" {
			r.Shadowed = true
		}
		rs = append(rs, r)
	}
	slices.SortStableFunc(rs, func(a, b bgp.Route) int {
		if c := comparePrefix(a.Prefix, b.Prefix); c != 0 {
			return c
		}
		if a.Origin == b.Origin {
			return 0
		}
		if a.Origin == bgp.OriginStatic {
			return -1
		}
		return 1
	})
	out := make([]api.Route, 0, len(rs))
	for _, r := range rs {
		out = append(out, api.Route{Prefix: r.Prefix.String(), Peer: r.Peer.String(), Origin: string(r.Origin), Since: r.Since,
			AgeSeconds: r.Age(now).Seconds(), Stale: r.Stale, Shadowed: r.Shadowed, Ignored: r.Ignored})
	}
	return out
}

func reflectorView(st bgp.ReflectorStatus, bound string) *api.Reflector {
	out := &api.Reflector{RouterID: addrString(st.RouterID), Port: st.Port, Interface: bound, Deferring: st.Deferring,
		AcceptedTotal: st.AcceptedTotal, RejectedTotal: st.RejectedTotal, LastError: st.LastError, Members: []api.ReflectorMember{}}
	verdicts := func(ps []bgp.PrefixStatus) []api.PrefixVerdict {
		out := make([]api.PrefixVerdict, 0, len(ps))
		for _, p := range ps {
			out = append(out, api.PrefixVerdict{Prefix: p.Prefix.String(), NextHop: addrString(p.Peer), Since: p.Since, Rule: p.Rule, Reason: p.Reason})
		}
		return out
	}
	for _, m := range st.Members {
		out.Members = append(out.Members, api.ReflectorMember{Identity: m.Identity, Address: m.Addr.String(), Session: m.Session, Since: m.Since,
			Policy: m.Policy, Accepted: verdicts(m.Accepted), Rejected: verdicts(m.Rejected), AcceptedTotal: m.AcceptedTotal, RejectedTotal: m.RejectedTotal})
	}
	return out
}

// bgpMetrics is the scrape-time source of a controller group's BGP
// series: the reflector is fetched on the loop and asked outside it.
func (s *Server) bgpMetrics(g *ctlGroup) metrics.BGPFunc {
	return func(ctx context.Context) ([]metrics.BGPMember, error) {
		var r *bgp.Reflector
		if err := s.callCtx(ctx, func() {
			if g.bgp != nil {
				r = g.bgp.r
			}
		}); err != nil || r == nil {
			return nil, err
		}
		var (
			cs  []bgp.MemberCounters
			err error
		)
		if !within(ctx, bgpStatusTimeout, func() { cs, err = r.Counters() }) {
			return nil, fmt.Errorf("the route reflector did not answer in time")
		}
		if err != nil {
			return nil, err
		}
		out := make([]metrics.BGPMember, 0, len(cs))
		for _, c := range cs {
			out = append(out, metrics.BGPMember{Identity: c.Identity, Accepted: c.Accepted, Rejected: c.Rejected, AcceptedNow: c.AcceptedNow, RejectedNow: c.RejectedNow})
		}
		return out, nil
	}
}
