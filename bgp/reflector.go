package bgp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/mpsa/mpsa/bgp/policy"
)

// DefaultRejectLogInterval is how often a reflector logs the routes it
// rejected from one member, at most.
const DefaultRejectLogInterval = 10 * time.Second

// ReflectorConfig configures a Reflector. Zero durations and ports take
// the defaults.
type ReflectorConfig struct {
	// ASN is the group's AS number; every session is iBGP.
	ASN uint32
	// RouterID is the BGP identifier, also the cluster ID; the zero Addr
	// takes the controller's control address of the first member (when
	// IPv4), which no member can have.
	RouterID netip.Addr
	// Port is the port the reflector listens on.
	Port uint16
	// Listen are the addresses it listens on; none means every address.
	Listen []netip.Addr
	// HoldTime is the hold time the reflector proposes.
	HoldTime time.Duration
	// RestartTime is the graceful restart time the reflector advertises:
	// how long members that do graceful restart (FRR, BIRD) keep its
	// routes while it restarts. mpsa's own members keep them for their
	// stale_time.
	RestartTime time.Duration
	// DeferralTime bounds how long a reflector that has just started
	// waits for the End-of-RIB of the members present before it sends
	// them the routes (RFC 4724's selection deferral), so that a member
	// never sees a partial table as the whole one after a controller
	// restart.
	DeferralTime time.Duration
	// BindInterface, if set, accepts BGP connections only from this
	// interface (SO_BINDTODEVICE): charon's TUN device with
	// kernel-libipsec.
	BindInterface string
	// Policy is the access control: what each member may advertise.
	Policy []policy.Rule
	// CheckNextHop rejects a route whose next hop is not the IKE address
	// of the member that advertised it (MemberInfo.Underlay), so that no
	// member can point its prefixes at another member or at a host
	// outside the group. Members whose ESP address differs from their
	// IKE address need it off.
	CheckNextHop bool
	// RejectLogInterval is how often the routes rejected from one member
	// are logged, at most; the first at once, then a summary.
	RejectLogInterval time.Duration
	// Logger receives the reflector's and GoBGP's log lines; nil
	// discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// After, if not nil, holds GoBGP's start until it is closed: the
	// Done of the reflector this one replaces in the same process, whose
	// GoBGP may still be stopping after Abandon. GoBGP keeps
	// process-wide state (its route selection options) that a speaker
	// starting writes while another stopping reads it.
	After <-chan struct{}
}

func (c *ReflectorConfig) defaults() {
	setDefault(&c.Port, DefaultPort)
	setDefault(&c.HoldTime, DefaultHoldTime)
	setDefault(&c.RestartTime, DefaultRestartTime)
	setDefault(&c.DeferralTime, DefaultDeferralTime)
	setDefault(&c.RejectLogInterval, DefaultRejectLogInterval)
	setDefault(&c.Logger, slog.New(slog.DiscardHandler))
	if c.Now == nil {
		c.Now = time.Now
	}
}

// MemberInfo identifies a member to the reflector.
type MemberInfo struct {
	// Addr is the member's control address: where its BGP session comes
	// from (the control child's remote traffic selector).
	Addr netip.Addr
	// Local is the controller's control address on that child, where the
	// session must arrive.
	Local netip.Addr
	// Identity is the member's IKE identity (charon's remote-id), which
	// the policy matches.
	Identity string
	// Underlay is the member's IKE address (charon's remote-host): with
	// ReflectorConfig.CheckNextHop, the only next hop its routes may
	// have. The zero Addr checks nothing.
	Underlay netip.Addr
}

// Reflector is a controller group's route reflector: a passive iBGP
// neighbour for each member whose control child is up, reflecting every
// member's accepted routes to all others. Its import policy is the access
// control: a route is accepted only when a policy rule matching the
// member's identity admits its prefix; the rest are dropped, counted,
// logged at a bounded rate and shown in Status.
//
// Methods are safe for concurrent use.
type Reflector struct {
	cfg ReflectorConfig
	log *slog.Logger
	run *runner
	evs chan speakerEvent
	// abandoned: Abandon ended the sessions; the loop leaves the port's
	// sockets alone when it ends.
	abandoned atomic.Bool

	// Owned by the loop.
	srv        *speaker
	watchStop  context.CancelFunc
	id         netip.Addr
	pol        *policy.Policy
	gen        int // generation of the GoBGP policy objects
	nextID     int // the last member id given
	members    map[netip.Addr]*rmember
	restarting bool
	restartEnd time.Time
	flushTimer *time.Timer
	flushC     <-chan time.Time
	pending    map[netip.Addr]struct{} // members with rejections not logged yet
	accepted   uint64
	rejected   uint64
	lastErr    string
}

// rmember is the reflector's state of one member.
type rmember struct {
	// id names the member's policy objects.
	id       int
	info     MemberInfo
	rules    []int
	state    bgppkt.FSMState
	since    time.Time
	families []bgppkt.Family // negotiated
	eor      map[bgppkt.Family]bool
	accepted map[netip.Prefix]PrefixStatus
	rejected map[netip.Prefix]PrefixStatus
	nAcc     uint64
	nRej     uint64
	// Rejection log.
	lastLog time.Time
	held    uint64
	heldEx  PrefixStatus
}

// NewReflector returns a Reflector; Start runs it.
func NewReflector(cfg ReflectorConfig) (*Reflector, error) {
	cfg.defaults()
	if err := checkSpeaker("bgp reflector", cfg.ASN, cfg.RouterID); err != nil {
		return nil, err
	}
	if err := checkRules(cfg.Policy); err != nil {
		return nil, err
	}
	return &Reflector{
		cfg:     cfg,
		log:     cfg.Logger,
		run:     newRunner("bgp reflector"),
		evs:     make(chan speakerEvent, 256),
		pol:     policy.New(cfg.Policy),
		members: map[netip.Addr]*rmember{},
		pending: map[netip.Addr]struct{}{},
	}, nil
}

func checkRules(rules []policy.Rule) error {
	for _, r := range rules {
		if err := policy.CheckIdentityPattern(r.Identity); err != nil {
			return fmt.Errorf("bgp reflector: policy %s: %w", r.Name, err)
		}
	}
	return nil
}

// Start runs the reflector until ctx is done or Close is called. With a
// configured RouterID the speaker starts at once, else with the first
// member.
//
// With ReflectorConfig.After, GoBGP starts on the reflector's own
// goroutine once After is closed, and an error in starting it is logged
// and shown in Status instead of returned.
func (r *Reflector) Start(ctx context.Context) error {
	var err error
	if r.cfg.RouterID.IsValid() {
		if r.cfg.After == nil {
			err = r.ensureServer(netip.Addr{})
		} else {
			r.run.push(func() { r.record(r.ensureServer(netip.Addr{})) })
		}
	}
	r.run.start(ctx, r.loop)
	return err
}

// Done is closed once the reflector has stopped, GoBGP included (after
// Close, or some time after Abandon).
func (r *Reflector) Done() <-chan struct{} { return r.run.done }

// Close stops the reflector without a NOTIFICATION to the members, so
// that those that do graceful restart keep its routes while it restarts
// (mpsa's members keep them for their stale_time in any case).
func (r *Reflector) Close() error {
	r.run.close()
	return nil
}

// Abandon ends every session of the reflector at once, at the socket
// level, as a crash would (members that do graceful restart, and mpsa's
// members in any case, keep its routes), and stops GoBGP in the
// background without waiting for it. It is for mpsad stopping, or a group
// removed: GoBGP's own stop of a thousand neighbours, each with its queue
// of routes, can take longer than a service manager waits. Its listener
// is shut down too, so that the port is free at once for a new reflector
// (a group set up again).
func (r *Reflector) Abandon() {
	// The loop must not shut down sessions on the port when it ends: by
	// then they may be a new reflector's.
	r.abandoned.Store(true)
	n := shutdownSockets(r.cfg.Port, func(netip.Addr) bool { return true }, true)
	r.log.Info("bgp: route reflector abandoned; members keep its routes", "sessions", n)
	if r.run.cancel != nil {
		r.run.cancel()
	}
}

func (r *Reflector) loop(ctx context.Context) {
	defer func() {
		if r.watchStop != nil {
			r.watchStop()
		}
		if r.srv != nil {
			if !r.abandoned.Load() {
				n := shutdownSessions(r.cfg.Port, func(a netip.Addr) bool { return r.members[a] != nil })
				r.log.Info("bgp: route reflector stopping; members keep its routes", "sessions", n)
			}
			r.srv.stop(r.log)
		}
		stopTimer(r.flushTimer)
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.run.signal:
			r.run.drain()
		case ev := <-r.evs:
			r.onEvent(ev)
		case <-r.flushC:
			r.flushC = nil
			r.flushRejections()
		}
	}
}

// ensureServer starts GoBGP on first need.
func (r *Reflector) ensureServer(local netip.Addr) error {
	if r.srv != nil {
		return nil
	}
	if r.cfg.After != nil {
		select {
		case <-r.cfg.After:
		case <-r.run.ctx.Done():
			return errors.New("bgp reflector: stopped before it started")
		}
	}
	id, err := routerID(r.cfg.RouterID, local)
	if err != nil {
		return fmt.Errorf("bgp reflector: %w", err)
	}
	g := &api.Global{Asn: r.cfg.ASN, RouterId: id.String(), ListenPort: int32(r.cfg.Port), BindToDevice: r.cfg.BindInterface}
	for _, a := range r.cfg.Listen {
		g.ListenAddresses = append(g.ListenAddresses, a.String())
	}
	srv := newSpeaker(r.log)
	if err := srv.StartBgp(context.Background(), &api.StartBgpRequest{Global: g}); err != nil {
		srv.stop(r.log)
		return fmt.Errorf("bgp reflector: start (listening on port %d): %w", r.cfg.Port, err)
	}
	cancel, err := srv.watch(r.evs, server.WatchUpdate(false, "", ""), server.WatchAdjInWithdraw(), server.WatchEor(false))
	if err != nil {
		srv.stop(r.log)
		return fmt.Errorf("bgp reflector: watch: %w", err)
	}
	r.srv, r.watchStop, r.id = &srv, cancel, id
	// Until every member present has sent its End-of-RIB, or for at most
	// DeferralTime, new sessions are told this speaker is restarting:
	// GoBGP then defers sending routes (RFC 4724 4.1), so that no member
	// takes a partial table after a controller restart for the whole.
	r.restarting, r.restartEnd = true, r.cfg.Now().Add(r.cfg.DeferralTime)
	if err := r.installPolicy(); err != nil {
		return err
	}
	r.log.Info("bgp: route reflector started", "asn", r.cfg.ASN, "router_id", id, "port", r.cfg.Port, "policy_rules", r.pol.Len())
	return nil
}

// Names of the GoBGP policy objects of generation gen.
func memberSetName(gen, id int) string { return fmt.Sprintf("mpsa%d-m%d", gen, id) }
func noneSetName(gen int) string       { return fmt.Sprintf("mpsa%d-none", gen) }
func statementName(gen, id, rule int, v6 bool) string {
	if v6 {
		return fmt.Sprintf("mpsa%d-m%d-r%d-v6", gen, id, rule)
	}
	return fmt.Sprintf("mpsa%d-m%d-r%d-v4", gen, id, rule)
}
func prefixSetName(gen, rule int, v6 bool) string {
	if v6 {
		return fmt.Sprintf("mpsa%d-r%d-v6", gen, rule)
	}
	return fmt.Sprintf("mpsa%d-r%d-v4", gen, rule)
}
func policyName(gen int) string { return fmt.Sprintf("mpsa%d-import", gen) }

// sentinel is the address of the neighbour set of the policy's first
// statement, which never matches: it keeps the policy, and its
// assignment, in place while no member has a statement. (GoBGP treats an
// empty neighbour set as matching every neighbour.) No neighbour has
// this address.
const sentinel = "255.255.255.255/32"

// hostPrefix is a as a neighbour set element.
func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// nextHops is the next-hop list a member's routes must match: its IKE
// address, and for IPv4 also its IPv4-mapped form, in which IPv6 routes
// carry an IPv4 next hop (RFC 4798).
func nextHops(a netip.Addr) []string {
	a = a.Unmap()
	out := []string{hostPrefix(a)}
	if a.Is4() {
		out = append(out, hostPrefix(netip.AddrFrom16(a.As16())))
	}
	return out
}

// memberStatements are the import statements of member m in policy
// generation gen: per rule its identity matches and family the rule has
// prefixes of, accept a route when it comes from m, its prefix is in the
// rule's ranges and, with CheckNextHop, its next hop is m's IKE address.
func (r *Reflector) memberStatements(gen int, m *rmember) []*api.Statement {
	var stmts []*api.Statement
	for _, i := range m.rules {
		for _, v6 := range []bool{false, true} {
			if !slices.ContainsFunc(r.pol.Rule(i).Prefixes, func(rg policy.Range) bool { return rg.Prefix.Addr().Is6() == v6 }) {
				continue
			}
			c := &api.Conditions{
				NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: memberSetName(gen, m.id)},
				PrefixSet:   &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: prefixSetName(gen, i, v6)},
			}
			if r.cfg.CheckNextHop && m.info.Underlay.IsValid() {
				c.NextHopInList = nextHops(m.info.Underlay)
			}
			stmts = append(stmts, &api.Statement{Name: statementName(gen, m.id, i, v6), Conditions: c,
				Actions: &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT}})
		}
	}
	return stmts
}

// memberSet is m's neighbour set in policy generation gen: its address.
func memberSet(gen int, m *rmember) *api.DefinedSet {
	return &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: memberSetName(gen, m.id), List: []string{hostPrefix(m.info.Addr)}}
}

// addMemberPolicy adds m's neighbour set and statements to the policy in
// force.
func (r *Reflector) addMemberPolicy(m *rmember) error {
	ctx := context.Background()
	if err := r.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: memberSet(r.gen, m)}); err != nil {
		return fmt.Errorf("bgp reflector: member %s: neighbour set: %w", m.info.Identity, err)
	}
	if stmts := r.memberStatements(r.gen, m); len(stmts) > 0 {
		if err := r.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: policyName(r.gen), Statements: stmts}}); err != nil {
			r.dropMemberPolicy(m)
			return fmt.Errorf("bgp reflector: member %s: import statements: %w", m.info.Identity, err)
		}
	}
	return nil
}

// dropMemberPolicy removes m's statements and neighbour set from the
// policy in force.
func (r *Reflector) dropMemberPolicy(m *rmember) {
	ctx := context.Background()
	if stmts := r.memberStatements(r.gen, m); len(stmts) > 0 {
		refs := make([]*api.Statement, len(stmts))
		for i, st := range stmts {
			refs[i] = &api.Statement{Name: st.Name}
		}
		if err := r.srv.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: policyName(r.gen), Statements: refs}, PreserveStatements: true}); err != nil {
			r.log.Warn("bgp: remove a member's import statements", "member", m.info.Identity, "err", err)
		}
		for _, st := range refs {
			if err := r.srv.DeleteStatement(ctx, &api.DeleteStatementRequest{Statement: st, All: true}); err != nil {
				r.log.Debug("bgp: delete a member's statement", "statement", st.Name, "err", err)
			}
		}
	}
	if err := r.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: memberSetName(r.gen, m.id)}, All: true}); err != nil {
		r.log.Warn("bgp: remove a member's neighbour set", "member", m.info.Identity, "err", err)
	}
}

// installPolicy builds the GoBGP import policy of r.pol as generation
// gen+1, makes it the global import policy with default reject, removes
// the previous generation, and applies it again to every route received.
//
// Per rule there is a prefix set per address family; per member a
// neighbour set of its address, and a statement per rule its identity
// matches and family, which accepts a route when its neighbour is in the
// first, its prefix in the second and, with CheckNextHop, its next hop is
// the member's IKE address. AddMember and RemoveMember add and remove a
// member's set and statements; work per member, not per fleet.
func (r *Reflector) installPolicy() error {
	ctx := context.Background()
	gen := r.gen + 1
	for i := range r.pol.Len() {
		rule := r.pol.Rule(i)
		for _, v6 := range []bool{false, true} {
			var ps []*api.Prefix
			for _, rg := range rule.Prefixes {
				if rg.Prefix.Addr().Is6() == v6 {
					ps = append(ps, &api.Prefix{IpPrefix: rg.Prefix.String(), MaskLengthMin: uint32(rg.Min), MaskLengthMax: uint32(rg.Max)})
				}
			}
			if len(ps) == 0 {
				continue
			}
			if err := r.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
				DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: prefixSetName(gen, i, v6), Prefixes: ps,
			}}); err != nil {
				return fmt.Errorf("bgp reflector: policy %s: prefix set: %w", rule.Name, err)
			}
		}
	}
	if err := r.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: noneSetName(gen), List: []string{sentinel},
	}}); err != nil {
		return fmt.Errorf("bgp reflector: neighbour set: %w", err)
	}
	stmts := []*api.Statement{{
		Name:       noneSetName(gen),
		Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: noneSetName(gen)}},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT},
	}}
	for _, m := range r.members {
		if err := r.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: memberSet(gen, m)}); err != nil {
			return fmt.Errorf("bgp reflector: member %s: neighbour set: %w", m.info.Identity, err)
		}
		stmts = append(stmts, r.memberStatements(gen, m)...)
	}
	pol := &api.Policy{Name: policyName(gen), Statements: stmts}
	if err := r.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
		return fmt.Errorf("bgp reflector: add import policy: %w", err)
	}
	if err := r.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name:          "global",
		Direction:     api.PolicyDirection_POLICY_DIRECTION_IMPORT,
		DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
		Policies:      []*api.Policy{{Name: pol.Name}},
	}}); err != nil {
		return fmt.Errorf("bgp reflector: set import policy: %w", err)
	}
	old := r.gen
	r.gen = gen
	if old > 0 {
		r.removeGeneration(old)
		// Apply the new policy to what the members sent.
		for addr, m := range r.members {
			if m.state == bgppkt.BGP_FSM_ESTABLISHED {
				if err := r.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr.String(), Soft: true, Direction: api.ResetPeerRequest_DIRECTION_IN}); err != nil {
					r.log.Warn("bgp: apply the new policy to a member's routes", "member", m.info.Identity, "addr", addr, "err", err)
				}
			}
		}
	}
	return nil
}

// removeGeneration deletes the GoBGP policy objects of generation gen,
// which no assignment uses any more.
func (r *Reflector) removeGeneration(gen int) {
	ctx := context.Background()
	if err := r.srv.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: policyName(gen)}, All: true}); err != nil {
		r.log.Debug("bgp: delete old policy", "err", err)
	}
	var sets []*api.DefinedSet
	r.srv.ListDefinedSet(ctx, &api.ListDefinedSetRequest{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR}, func(d *api.DefinedSet) { sets = append(sets, d) })
	r.srv.ListDefinedSet(ctx, &api.ListDefinedSetRequest{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX}, func(d *api.DefinedSet) { sets = append(sets, d) })
	prefix := fmt.Sprintf("mpsa%d-", gen)
	for _, d := range sets {
		if len(d.Name) >= len(prefix) && d.Name[:len(prefix)] == prefix {
			if err := r.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: &api.DefinedSet{DefinedType: d.DefinedType, Name: d.Name}, All: true}); err != nil {
				r.log.Debug("bgp: delete old defined set", "set", d.Name, "err", err)
			}
		}
	}
}

// SetPolicy replaces the policy (a reload) and applies it to every route
// the members sent: newly rejected routes are withdrawn from the others,
// newly admitted ones reflected. Like AddMember, it does not wait.
func (r *Reflector) SetPolicy(rules []policy.Rule) error {
	if err := checkRules(rules); err != nil {
		return err
	}
	pol := policy.New(rules)
	r.run.push(func() {
		r.pol = pol
		for _, m := range r.members {
			m.rules = r.pol.Matching(m.info.Identity)
		}
		if r.srv != nil {
			r.record(r.installPolicy())
		}
		// Re-judge what is recorded; the soft reset re-announces
		// nothing to the watcher, so the verdicts are recomputed here.
		for _, m := range r.members {
			r.rejudge(m)
		}
	})
	return nil
}

// record logs err and keeps it for Status.
func (r *Reflector) record(err error) {
	if err != nil {
		r.lastErr = err.Error()
		r.log.Error("bgp", "err", err)
	}
}

// rejudge re-applies the policy to the prefixes recorded for m.
func (r *Reflector) rejudge(m *rmember) {
	all := make(map[netip.Prefix]PrefixStatus, len(m.accepted)+len(m.rejected))
	maps.Copy(all, m.accepted)
	maps.Copy(all, m.rejected)
	clear(m.accepted)
	clear(m.rejected)
	for p, st := range all {
		v := r.judge(m, p, st.Peer)
		st.Rule, st.Reason = v.Rule, v.Reason
		if v.Allowed {
			m.accepted[p] = st
		} else {
			m.rejected[p] = st
		}
	}
}

// AddMember adds a neighbour for a member whose control child is up.
// Adding the same member again does nothing; the same address with
// another identity replaces it. It does not wait for GoBGP, which may be
// busy for seconds sending its table to many members: the change is
// queued and applied in order, and an error in applying it is logged and
// shown in Status.
func (r *Reflector) AddMember(info MemberInfo) error {
	info.Addr, info.Local = info.Addr.Unmap(), info.Local.Unmap()
	if !info.Addr.IsValid() {
		return fmt.Errorf("bgp reflector: member %q has no control address", info.Identity)
	}
	r.run.push(func() { r.record(r.addMember(info)) })
	return nil
}

func (r *Reflector) addMember(info MemberInfo) error {
	if m, ok := r.members[info.Addr]; ok {
		if m.info == info {
			return nil
		}
		r.removeMember(info.Addr, "replaced")
	}
	if err := r.ensureServer(info.Local); err != nil {
		return err
	}
	ctx := context.Background()
	m := &rmember{
		info:     info,
		rules:    r.pol.Matching(info.Identity),
		state:    bgppkt.BGP_FSM_IDLE,
		since:    r.cfg.Now(),
		eor:      map[bgppkt.Family]bool{},
		accepted: map[netip.Prefix]PrefixStatus{},
		rejected: map[netip.Prefix]PrefixStatus{},
	}
	r.nextID++
	m.id = r.nextID
	// The statements first, so that the member's first route meets its
	// rules.
	if err := r.addMemberPolicy(m); err != nil {
		return err
	}
	restarting := r.restarting && r.cfg.Now().Before(r.restartEnd)
	peer := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: info.Addr.String(), PeerAsn: r.cfg.ASN, Description: info.Identity},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          uint64(seconds(r.cfg.HoldTime)),
			KeepaliveInterval: uint64(max(1, seconds(r.cfg.HoldTime)/3)),
		}},
		Transport: &api.Transport{PassiveMode: true},
		RouteReflector: &api.RouteReflector{
			RouteReflectorClient:    true,
			RouteReflectorClusterId: r.id.String(),
		},
		GracefulRestart: &api.GracefulRestart{
			Enabled:             true,
			RestartTime:         seconds(r.cfg.RestartTime),
			DeferralTime:        seconds(r.cfg.DeferralTime),
			NotificationEnabled: true,
			LocalRestarting:     restarting,
		},
		AfiSafis: afiSafis(),
	}
	if info.Local.IsValid() {
		peer.Transport.LocalAddress = info.Local.String()
	}
	if err := r.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peer}); err != nil {
		r.dropMemberPolicy(m)
		return fmt.Errorf("bgp reflector: add member %s (%s): %w", info.Identity, info.Addr, err)
	}
	r.members[info.Addr] = m
	names := make([]string, len(m.rules))
	for k, i := range m.rules {
		names[k] = r.pol.Rule(i).Name
	}
	if len(m.rules) == 0 {
		r.log.Warn("bgp: member matches no policy rule: every route it advertises will be rejected", "member", info.Identity, "addr", info.Addr)
	} else {
		r.log.Info("bgp: member added", "member", info.Identity, "addr", info.Addr, "policy", names)
	}
	return nil
}

// RemoveMember removes the member at its control address (its control
// child is gone): its routes are withdrawn from every other member at
// once. It does not wait (see AddMember).
func (r *Reflector) RemoveMember(addr netip.Addr) {
	addr = addr.Unmap()
	r.run.push(func() { r.removeMember(addr, "control child down") })
}

func (r *Reflector) removeMember(addr netip.Addr, why string) {
	m, ok := r.members[addr]
	if !ok {
		return
	}
	if err := r.srv.DeletePeer(context.Background(), &api.DeletePeerRequest{Address: addr.String()}); err != nil {
		r.log.Warn("bgp: remove member", "member", m.info.Identity, "addr", addr, "err", err)
	}
	r.dropMemberPolicy(m)
	if m.held > 0 {
		r.logRejections(m, r.cfg.Now())
	}
	delete(r.members, addr)
	delete(r.pending, addr)
	r.log.Info("bgp: member removed; its routes are withdrawn", "member", m.info.Identity, "addr", addr, "reason", why, "routes", len(m.accepted))
}

func (r *Reflector) onEvent(ev speakerEvent) {
	switch {
	case ev.peer != nil:
		r.onPeer(ev.peer)
	case ev.eor != nil:
		m := r.members[ev.eor.PeerAddress.Unmap()]
		if m == nil {
			return
		}
		m.eor[ev.eor.Family] = true
		r.checkSynced()
	default:
		r.onPaths(ev.paths)
	}
}

func (r *Reflector) onPeer(p *apiutil.WatchEventMessage_PeerEvent) {
	m := r.members[p.Peer.State.NeighborAddress.Unmap()]
	if m == nil {
		return
	}
	next := p.Peer.State.SessionState
	if next == m.state {
		return
	}
	prev := m.state
	m.state, m.since = next, r.cfg.Now()
	switch {
	case next == bgppkt.BGP_FSM_ESTABLISHED:
		clear(m.eor)
		m.families = negotiated(p.Peer.State.RemoteCap)
		r.log.Info("bgp: member session established", "member", m.info.Identity, "addr", m.info.Addr)
	case prev == bgppkt.BGP_FSM_ESTABLISHED:
		r.log.Info("bgp: member session down", "member", m.info.Identity, "addr", m.info.Addr, "reason", p.Peer.State.DisconnectMessage)
	}
}

// negotiated returns the families of ours that the peer's capabilities
// announce (IPv4 unicast when it announces none, as RFC 4760 says).
func negotiated(caps []bgppkt.ParameterCapabilityInterface) []bgppkt.Family {
	var fs []bgppkt.Family
	for _, c := range caps {
		if mp, ok := c.(*bgppkt.CapMultiProtocol); ok && slices.Contains(families(), mp.CapValue) {
			fs = append(fs, mp.CapValue)
		}
	}
	if len(fs) == 0 {
		fs = []bgppkt.Family{bgppkt.RF_IPv4_UC}
	}
	return fs
}

// checkSynced ends the restart window once every member has sent its
// End-of-RIB for every family it negotiated: from then on new members
// get routes at once.
func (r *Reflector) checkSynced() {
	if !r.restarting {
		return
	}
	for _, m := range r.members {
		if m.state != bgppkt.BGP_FSM_ESTABLISHED {
			return
		}
		for _, f := range m.families {
			if !m.eor[f] {
				return
			}
		}
	}
	r.restarting = false
	r.log.Info("bgp: every member has sent its routes; reflecting", "members", len(r.members))
}

// onPaths records the verdict on every route a member advertised or
// withdrew (GoBGP's import policy has already enforced it), and counts
// and logs the rejected ones.
func (r *Reflector) onPaths(paths []*apiutil.Path) {
	now := r.cfg.Now()
	for _, path := range paths {
		m := r.members[path.PeerAddress.Unmap()]
		if m == nil {
			continue
		}
		p, ok := pathPrefix(path)
		if !ok {
			continue
		}
		if path.Withdrawal {
			delete(m.accepted, p)
			delete(m.rejected, p)
			continue
		}
		st := PrefixStatus{Prefix: p, Peer: nextHop(path), Since: now}
		if old, ok := m.accepted[p]; ok && old.Peer == st.Peer {
			st.Since = old.Since
		} else if old, ok := m.rejected[p]; ok && old.Peer == st.Peer {
			st.Since = old.Since
		}
		v := r.judge(m, p, st.Peer)
		st.Rule, st.Reason = v.Rule, v.Reason
		if v.Allowed && !usableNextHop(st.Peer) {
			// GoBGP reflects it; the members ignore it.
			st.Reason = "no usable next hop"
		}
		if v.Allowed {
			delete(m.rejected, p)
			m.accepted[p] = st
			m.nAcc++
			r.accepted++
			continue
		}
		delete(m.accepted, p)
		m.rejected[p] = st
		m.nRej++
		r.rejected++
		r.noteRejection(m, st, now)
	}
}

// noteRejection logs a rejected route: the first of a member at once,
// then at most one line per RejectLogInterval with the number held back.
func (r *Reflector) noteRejection(m *rmember, st PrefixStatus, now time.Time) {
	m.held++
	m.heldEx = st
	if now.Sub(m.lastLog) >= r.cfg.RejectLogInterval {
		r.logRejections(m, now)
		return
	}
	r.pending[m.info.Addr] = struct{}{}
	if r.flushC == nil {
		r.flushTimer = time.NewTimer(m.lastLog.Add(r.cfg.RejectLogInterval).Sub(now))
		r.flushC = r.flushTimer.C
	}
}

func (r *Reflector) logRejections(m *rmember, now time.Time) {
	r.log.Warn("bgp: rejected a route the policy does not allow this member", "member", m.info.Identity, "addr", m.info.Addr,
		"prefix", m.heldEx.Prefix, "next_hop", m.heldEx.Peer, "reason", m.heldEx.Reason, "rejected_since_last_report", m.held, "rejected_total", m.nRej)
	m.lastLog, m.held = now, 0
	delete(r.pending, m.info.Addr)
}

// flushRejections logs the members whose held-back rejections are due,
// and re-arms the timer for the others.
func (r *Reflector) flushRejections() {
	now := r.cfg.Now()
	var next time.Time
	for addr := range r.pending {
		m := r.members[addr]
		if m == nil {
			delete(r.pending, addr)
			continue
		}
		due := m.lastLog.Add(r.cfg.RejectLogInterval)
		if !now.Before(due) {
			r.logRejections(m, now)
		} else if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	if !next.IsZero() {
		r.flushTimer = time.NewTimer(next.Sub(now))
		r.flushC = r.flushTimer.C
	}
}

// judge is the verdict on prefix p with next hop nh from member m: the
// policy's, and with CheckNextHop the next hop's, as GoBGP's import
// policy enforces them.
func (r *Reflector) judge(m *rmember, p netip.Prefix, nh netip.Addr) policy.Verdict {
	v := r.pol.Check(m.info.Identity, m.rules, p)
	if v.Allowed && r.cfg.CheckNextHop && m.info.Underlay.IsValid() && nh.Unmap() != m.info.Underlay.Unmap() {
		return policy.Verdict{Reason: fmt.Sprintf("next hop %s is not the member's IKE address %s", nh, m.info.Underlay.Unmap())}
	}
	return v
}

// PrefixStatus is one prefix a member advertised.
type PrefixStatus struct {
	Prefix netip.Prefix `json:"prefix"`
	// Peer is the next hop it came with: the member's underlay.
	Peer netip.Addr `json:"peer,omitzero"`
	// Since is when it was first advertised with this peer.
	Since time.Time `json:"since"`
	// Rule is the policy rule that admitted it.
	Rule string `json:"rule,omitempty"`
	// Reason says why it was rejected.
	Reason string `json:"reason,omitempty"`
}

// ReflectorMember is one member in the reflector's status.
type ReflectorMember struct {
	Identity string     `json:"identity"`
	Addr     netip.Addr `json:"addr"`
	// Session is the BGP session state (established, active, idle...).
	Session string `json:"session"`
	// Since is when the session entered that state.
	Since time.Time `json:"since"`
	// Policy names the rules that match the identity.
	Policy []string `json:"policy"`
	// Accepted and Rejected are the prefixes the member advertises now.
	Accepted []PrefixStatus `json:"accepted"`
	Rejected []PrefixStatus `json:"rejected"`
	// AcceptedTotal and RejectedTotal count every advertisement since
	// the member was added.
	AcceptedTotal uint64 `json:"accepted_total"`
	RejectedTotal uint64 `json:"rejected_total"`
}

// ReflectorStatus is the reflector's state, as `mpsactl routes` shows it
// on a controller.
type ReflectorStatus struct {
	RouterID netip.Addr `json:"router_id,omitzero"`
	Port     uint16     `json:"port"`
	// Deferring is true while the reflector, just started, waits for the
	// members' End-of-RIB before it reflects.
	Deferring     bool              `json:"deferring,omitempty"`
	Members       []ReflectorMember `json:"members"`
	AcceptedTotal uint64            `json:"accepted_total"`
	RejectedTotal uint64            `json:"rejected_total"`
	// LastError is the last error in applying a change, if any.
	LastError string `json:"last_error,omitempty"`
}

// Status returns the reflector's state, members sorted by identity then
// address.
func (r *Reflector) Status() (ReflectorStatus, error) {
	var st ReflectorStatus
	err := r.run.do(func() {
		st.RouterID, st.Port = r.id, r.cfg.Port
		st.Deferring = r.srv != nil && r.restarting && r.cfg.Now().Before(r.restartEnd)
		st.AcceptedTotal, st.RejectedTotal = r.accepted, r.rejected
		st.LastError = r.lastErr
		for _, m := range r.members {
			rm := ReflectorMember{
				Identity: m.info.Identity, Addr: m.info.Addr,
				Session: sessionName(m.state, true), Since: m.since,
				Policy:        []string{},
				Accepted:      sortedStatus(m.accepted),
				Rejected:      sortedStatus(m.rejected),
				AcceptedTotal: m.nAcc, RejectedTotal: m.nRej,
			}
			for _, i := range m.rules {
				rm.Policy = append(rm.Policy, r.pol.Rule(i).Name)
			}
			st.Members = append(st.Members, rm)
		}
		slices.SortFunc(st.Members, func(a, b ReflectorMember) int {
			return cmp.Or(cmp.Compare(a.Identity, b.Identity), a.Addr.Compare(b.Addr))
		})
	})
	return st, err
}

func sortedStatus(m map[netip.Prefix]PrefixStatus) []PrefixStatus {
	out := make([]PrefixStatus, 0, len(m))
	for _, p := range slices.SortedFunc(maps.Keys(m), comparePrefix) {
		out = append(out, m[p])
	}
	return out
}

// MemberCounters are the counters of one member, for metrics.
type MemberCounters struct {
	Identity string
	Addr     netip.Addr
	// Accepted and Rejected count every advertisement since the member
	// was added.
	Accepted, Rejected uint64
	// AcceptedNow and RejectedNow are the prefixes it advertises now.
	AcceptedNow, RejectedNow int
}

// Counters returns every member's counters without the prefix lists,
// cheap enough for a metrics scrape.
func (r *Reflector) Counters() ([]MemberCounters, error) {
	var out []MemberCounters
	err := r.run.do(func() {
		out = make([]MemberCounters, 0, len(r.members))
		for _, m := range r.members {
			out = append(out, MemberCounters{Identity: m.info.Identity, Addr: m.info.Addr, Accepted: m.nAcc, Rejected: m.nRej, AcceptedNow: len(m.accepted), RejectedNow: len(m.rejected)})
		}
	})
	return out, err
}
