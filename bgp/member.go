package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// MemberConfig configures a Member. Zero durations and ports take the
// defaults.
type MemberConfig struct {
	// ASN is the group's AS number; the session is iBGP.
	ASN uint32
	// RouterID is the BGP identifier; the zero Addr derives it from the
	// local control address (or the underlay) when the session is first
	// set up. It must be unique among the group's members.
	RouterID netip.Addr
	// Port is the controller's BGP port.
	Port uint16
	// HoldTime is the hold time this member proposes.
	HoldTime time.Duration
	// RestartTime is the graceful restart time this member advertises:
	// how long the controller keeps its routes when the session breaks
	// while the control child stays up (a restart of mpsad).
	RestartTime time.Duration
	// StaleTime is how long the learned routes are kept while the
	// session with the controller is down; when it comes back, the routes
	// the controller does not advertise again are dropped at its
	// End-of-RIB.
	StaleTime time.Duration
	// BindInterface, if set, binds the session's socket to this
	// interface (SO_BINDTODEVICE): charon's TUN device with
	// kernel-libipsec, so that the session never leaves in plaintext.
	BindInterface string
	// Logger receives the member's and GoBGP's log lines; nil discards
	// them.
	Logger *slog.Logger
	// OnChange receives every change of the learned routes that the data
	// plane must use, in order, from one goroutine. It must not block
	// for long and must not call the Member's methods (hand the changes
	// to the engine's loop instead).
	OnChange func([]Change)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c *MemberConfig) defaults() {
	setDefault(&c.Port, DefaultPort)
	setDefault(&c.HoldTime, DefaultHoldTime)
	setDefault(&c.RestartTime, DefaultRestartTime)
	setDefault(&c.StaleTime, DefaultStaleTime)
	setDefault(&c.Logger, slog.New(slog.DiscardHandler))
	if c.OnChange == nil {
		c.OnChange = func([]Change) {}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Member is a member group's BGP speaker: one iBGP session with the
// controller over the control child, advertising this member's prefixes
// with its underlay address as next hop, and learning the other members'.
//
// Learned routes outlive the session: when it goes down (the control
// child went away, or the controller restarts) they are kept as stale for
// StaleTime, as the member keeps its SA while the controller is away;
// when the session is back, those the controller advertises again are
// fresh, and the rest are withdrawn at the controller's End-of-RIB.
//
// Methods are safe for concurrent use.
type Member struct {
	cfg MemberConfig
	log *slog.Logger
	run *runner
	evs chan speakerEvent

	// Owned by the loop.
	srv        *speaker
	ctl, local netip.Addr // the controller's and our control address, when set
	iface      string     // the interface the session is bound to, when set
	state      bgppkt.FSMState
	upSince    time.Time
	eor        map[bgppkt.Family]bool
	prefixes   []netip.Prefix
	underlay   netip.Addr
	advertised map[netip.Prefix]netip.Addr // prefix -> next hop sent
	learned    map[netip.Prefix]*learnedRoute
	staleTimer *time.Timer
	staleC     <-chan time.Time
	syncTimer  *time.Timer
	syncC      <-chan time.Time
	watchStop  context.CancelFunc
	lastErr    string
}

// learnedRoute is a route learned from the controller.
type learnedRoute struct {
	peer    netip.Addr
	since   time.Time
	stale   bool
	ignored string // why it is not delivered; "" when delivered
}

// NewMember returns a Member; Start runs it.
func NewMember(cfg MemberConfig) (*Member, error) {
	cfg.defaults()
	if err := checkSpeaker("bgp member", cfg.ASN, cfg.RouterID); err != nil {
		return nil, err
	}
	return &Member{
		cfg:        cfg,
		log:        cfg.Logger,
		run:        newRunner("bgp member"),
		evs:        make(chan speakerEvent, 64),
		advertised: map[netip.Prefix]netip.Addr{},
		learned:    map[netip.Prefix]*learnedRoute{},
		eor:        map[bgppkt.Family]bool{},
	}, nil
}

// Start runs the member until ctx is done or Close is called. The BGP
// speaker itself starts with the first SetController.
func (m *Member) Start(ctx context.Context) {
	m.run.start(ctx, m.loop)
}

// Close stops the session and the speaker. The controller keeps this
// member's routes for RestartTime (graceful restart), so a restart of
// mpsad does not interrupt the others' traffic to it.
func (m *Member) Close() error {
	m.run.close()
	return nil
}

func (m *Member) loop(ctx context.Context) {
	defer m.shutdown()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.run.signal:
			m.run.drain()
		case ev := <-m.evs:
			m.onEvent(ev)
		case <-m.staleC:
			m.staleC = nil
			m.log.Info("bgp: stale routes expired", "stale_time", m.cfg.StaleTime)
			m.sweep(func(netip.Prefix) bool { return true })
		case <-m.syncC:
			m.syncC = nil
			m.sweep(func(netip.Prefix) bool { return true })
		}
	}
}

// shutdown stops GoBGP. A stop without NOTIFICATION lets the controller
// keep this member's routes for RestartTime.
func (m *Member) shutdown() {
	if m.watchStop != nil {
		m.watchStop()
	}
	if m.srv != nil {
		m.srv.stop(m.log)
	}
	stopTimer(m.staleTimer)
	stopTimer(m.syncTimer)
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// SetController (re)starts the session with the controller at ctl, from
// the local control address local: call it when the control child is
// INSTALLED. Calling it again with the same addresses does nothing. It
// does not wait for GoBGP: the change is queued and applied in order, and
// an error in applying it is logged and shown in Status.
func (m *Member) SetController(ctl, local netip.Addr) error {
	return m.SetControllerOn(ctl, local, m.cfg.BindInterface)
}

// SetControllerOn is SetController with the session's socket bound to
// bindInterface (none if empty) instead of MemberConfig.BindInterface:
// the interface that proves the control child protects the session
// (charon's TUN, or a route-based child's XFRM interface). Another
// interface with the same addresses starts the session again.
func (m *Member) SetControllerOn(ctl, local netip.Addr, bindInterface string) error {
	ctl, local = ctl.Unmap(), local.Unmap()
	if !ctl.IsValid() || !local.IsValid() {
		return fmt.Errorf("bgp member: controller %v or local address %v is not valid", ctl, local)
	}
	m.run.push(func() { m.record(m.setController(ctl, local, bindInterface)) })
	return nil
}

// record logs err and keeps it for Status; nil clears nothing.
func (m *Member) record(err error) {
	if err != nil {
		m.lastErr = err.Error()
		m.log.Error("bgp", "err", err)
	}
}

func (m *Member) setController(ctl, local netip.Addr, iface string) error {
	if ctl == m.ctl && local == m.local && iface == m.iface {
		return nil
	}
	if m.ctl.IsValid() {
		m.controllerDown("controller changed")
	}
	if err := m.ensureServer(local); err != nil {
		return err
	}
	peer := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: ctl.String(), PeerAsn: m.cfg.ASN, Description: "mpsa controller"},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      connectRetry,
			HoldTime:          uint64(seconds(m.cfg.HoldTime)),
			KeepaliveInterval: uint64(max(1, seconds(m.cfg.HoldTime)/3)),
		}},
		Transport: &api.Transport{
			LocalAddress:  local.String(),
			RemotePort:    uint32(m.cfg.Port),
			BindInterface: iface,
		},
		GracefulRestart: &api.GracefulRestart{Enabled: true, RestartTime: seconds(m.cfg.RestartTime), NotificationEnabled: true},
		AfiSafis:        afiSafis(),
	}
	if err := m.srv.AddPeer(context.Background(), &api.AddPeerRequest{Peer: peer}); err != nil {
		return fmt.Errorf("bgp member: add controller %s: %w", ctl, err)
	}
	m.ctl, m.local, m.iface = ctl, local, iface
	m.state = bgppkt.BGP_FSM_IDLE
	m.log.Info("bgp: connecting to the controller", "controller", ctl, "local", local, "port", m.cfg.Port, "interface", iface)
	return nil
}

// ensureServer starts GoBGP on first need, with the router ID configured
// or derived from the local control address.
func (m *Member) ensureServer(local netip.Addr) error {
	if m.srv != nil {
		return nil
	}
	id, err := routerID(m.cfg.RouterID, local, m.underlay)
	if err != nil {
		return fmt.Errorf("bgp member: %w", err)
	}
	srv := newSpeaker(m.log)
	if err := srv.StartBgp(context.Background(), &api.StartBgpRequest{Global: &api.Global{
		Asn:        m.cfg.ASN,
		RouterId:   id.String(),
		ListenPort: -1, // the member only connects; it listens for nothing
	}}); err != nil {
		srv.stop(m.log)
		return fmt.Errorf("bgp member: start: %w", err)
	}
	cancel, err := srv.watch(m.evs, server.WatchUpdate(false, "", ""), server.WatchEor(false))
	if err != nil {
		srv.stop(m.log)
		return fmt.Errorf("bgp member: watch: %w", err)
	}
	m.srv, m.watchStop = &srv, cancel
	m.log.Info("bgp: speaker started", "asn", m.cfg.ASN, "router_id", id)
	// The prefixes given to Advertise before the speaker existed.
	if err := m.syncAdvertised(); err != nil {
		m.log.Error("bgp: advertise", "err", err)
	}
	return nil
}

// ControllerDown ends the session: call it when the control child is gone.
// The learned routes stay, stale, for StaleTime. It does not wait.
func (m *Member) ControllerDown() {
	m.run.push(func() { m.controllerDown("control child down") })
}

func (m *Member) controllerDown(why string) {
	if !m.ctl.IsValid() {
		return
	}
	if err := m.srv.DeletePeer(context.Background(), &api.DeletePeerRequest{Address: m.ctl.String()}); err != nil {
		m.log.Warn("bgp: remove the controller", "controller", m.ctl, "err", err)
	}
	m.log.Info("bgp: session with the controller ended; keeping the learned routes", "controller", m.ctl, "reason", why, "routes", len(m.learned), "stale_time", m.cfg.StaleTime)
	m.ctl, m.local, m.iface = netip.Addr{}, netip.Addr{}, ""
	m.sessionLost()
}

// sessionLost marks every learned route stale and starts the stale timer
// (if it is not running already: the first loss counts).
func (m *Member) sessionLost() {
	m.state = bgppkt.BGP_FSM_IDLE
	clear(m.eor)
	stopTimer(m.syncTimer)
	m.syncC = nil
	for _, r := range m.learned {
		r.stale = true
	}
	if m.staleC == nil && len(m.learned) > 0 {
		m.staleTimer = time.NewTimer(m.cfg.StaleTime)
		m.staleC = m.staleTimer.C
	}
}

// Restore gives the member the routes an earlier run of it delivered
// (the engine keeps them across a restart of mpsad, as the data plane
// keeps its kill switch): they count as learned and stale, as if the
// session had just been lost, so that the controller's End-of-RIB
// withdraws those it does not advertise again, and StaleTime bounds
// them. A route already learned is left as it is. Nothing is delivered to
// OnChange for them: the caller has them. Call it before SetController.
func (m *Member) Restore(routes []Change) {
	routes = slices.Clone(routes)
	m.run.push(func() {
		n := 0
		for _, c := range routes {
			if c.Withdrawn || m.learned[c.Prefix] != nil || !usableNextHop(c.Peer) {
				continue
			}
			m.learned[c.Prefix] = &learnedRoute{peer: c.Peer.Unmap(), since: c.Learned, stale: true}
			n++
		}
		if n > 0 {
			m.log.Info("bgp: restored the routes of the previous run, stale until the controller advertises them again", "routes", n, "stale_time", m.cfg.StaleTime)
			if m.staleC == nil {
				m.staleTimer = time.NewTimer(m.cfg.StaleTime)
				m.staleC = m.staleTimer.C
			}
		}
	})
}

// Advertise sets the prefixes this member advertises (local_ts) and the
// underlay address (the next hop) they are reached at. Only what changed
// is sent. Learned routes that overlap the new prefixes, or lead to the
// new underlay, stop being delivered, and those that no longer do are
// delivered again. It does not wait for GoBGP (see SetController).
func (m *Member) Advertise(prefixes []netip.Prefix, underlay netip.Addr) error {
	underlay = underlay.Unmap()
	if !usableNextHop(underlay) {
		return fmt.Errorf("bgp member: underlay %v is not an address ESP can be sent to", underlay)
	}
	prefixes = slices.Clone(prefixes)
	m.run.push(func() {
		m.prefixes, m.underlay = prefixes, underlay
		m.record(m.syncAdvertised())
		m.reconsider()
	})
	return nil
}

// syncAdvertised brings GoBGP's local paths in line with prefixes and
// underlay.
func (m *Member) syncAdvertised() error {
	if m.srv == nil {
		return nil
	}
	want := map[netip.Prefix]netip.Addr{}
	if m.underlay.IsValid() {
		for _, p := range m.prefixes {
			want[p] = m.underlay
		}
	}
	var errs []error
	for _, p := range slices.SortedFunc(maps.Keys(m.advertised), comparePrefix) {
		if _, ok := want[p]; ok {
			continue
		}
		path, err := advertisement(p, m.advertised[p], true)
		if err == nil {
			err = m.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{path}})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
			continue
		}
		delete(m.advertised, p)
	}
	for _, p := range slices.SortedFunc(maps.Keys(want), comparePrefix) {
		if nh, ok := m.advertised[p]; ok && nh == want[p] {
			continue
		}
		path, err := advertisement(p, want[p], false)
		if err == nil {
			_, err = m.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("advertise %s via %s: %w", p, want[p], err))
			continue
		}
		m.advertised[p] = want[p]
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bgp member: %w", err)
	}
	return nil
}

// ignoreReason says why a learned route must not be used, "" if it may.
func (m *Member) ignoreReason(p netip.Prefix, peer netip.Addr) string {
	if peer == m.underlay {
		return "its peer is this member's own underlay"
	}
	for _, own := range m.prefixes {
		if own.Overlaps(p) {
			return "it overlaps this member's own prefix " + own.String()
		}
	}
	return ""
}

// reconsider re-evaluates which learned routes are ignored after
// Advertise changed this member's own prefixes or underlay.
func (m *Member) reconsider() {
	var out []Change
	for _, p := range slices.SortedFunc(maps.Keys(m.learned), comparePrefix) {
		r := m.learned[p]
		why := m.ignoreReason(p, r.peer)
		switch {
		case why == r.ignored:
		case why == "":
			out = append(out, Change{Prefix: p, Peer: r.peer, Learned: r.since})
		case r.ignored == "":
			out = append(out, Change{Prefix: p, Learned: m.cfg.Now(), Withdrawn: true})
		}
		r.ignored = why
	}
	m.emit(out)
}

func (m *Member) emit(out []Change) {
	if len(out) > 0 {
		m.cfg.OnChange(out)
	}
}

func (m *Member) onEvent(ev speakerEvent) {
	switch {
	case ev.peer != nil:
		m.onPeer(ev.peer)
	case ev.eor != nil:
		if ev.eor.PeerAddress.Unmap() != m.ctl || m.state != bgppkt.BGP_FSM_ESTABLISHED {
			return
		}
		f := ev.eor.Family
		m.eor[f] = true
		m.log.Debug("bgp: End-of-RIB from the controller", "family", f)
		m.sweep(func(p netip.Prefix) bool { return family(p) == f })
	default:
		m.onPaths(ev.paths)
	}
}

func (m *Member) onPeer(p *apiutil.WatchEventMessage_PeerEvent) {
	if p.Peer.State.NeighborAddress.Unmap() != m.ctl {
		return
	}
	next := p.Peer.State.SessionState
	prev := m.state
	m.state = next
	switch {
	case next == bgppkt.BGP_FSM_ESTABLISHED && prev != next:
		m.upSince = m.cfg.Now()
		clear(m.eor)
		m.log.Info("bgp: session with the controller established", "controller", m.ctl)
		if !hasGracefulRestart(p.Peer.State.RemoteCap) {
			// No End-of-RIB will come: give the controller syncWait to
			// advertise its table again, then drop what it did not.
			m.syncTimer = time.NewTimer(syncWait)
			m.syncC = m.syncTimer.C
		}
	case prev == bgppkt.BGP_FSM_ESTABLISHED && next != prev:
		m.log.Info("bgp: session with the controller lost; keeping the learned routes", "controller", m.ctl, "reason", p.Peer.State.DisconnectMessage, "routes", len(m.learned), "stale_time", m.cfg.StaleTime)
		m.sessionLost()
	}
}

// hasGracefulRestart reports whether the capabilities include graceful
// restart, under which the peer sends End-of-RIB.
func hasGracefulRestart(caps []bgppkt.ParameterCapabilityInterface) bool {
	for _, c := range caps {
		if c.Code() == bgppkt.BGP_CAP_GRACEFUL_RESTART {
			return true
		}
	}
	return false
}

// onPaths applies the paths of an UPDATE from the controller.
func (m *Member) onPaths(paths []*apiutil.Path) {
	now := m.cfg.Now()
	var out []Change
	for _, path := range paths {
		if path.PeerAddress.Unmap() != m.ctl {
			continue
		}
		p, ok := pathPrefix(path)
		if !ok {
			continue
		}
		old := m.learned[p]
		if path.Withdrawal {
			if old == nil {
				continue
			}
			delete(m.learned, p)
			if old.ignored == "" {
				out = append(out, Change{Prefix: p, Learned: now, Withdrawn: true})
			}
			continue
		}
		nh := nextHop(path)
		if !usableNextHop(nh) {
			m.log.Warn("bgp: ignoring a route without a usable next hop", "prefix", p, "next_hop", nh)
			if old != nil {
				delete(m.learned, p)
				if old.ignored == "" {
					out = append(out, Change{Prefix: p, Learned: now, Withdrawn: true})
				}
			}
			continue
		}
		if old != nil && old.peer == nh {
			old.stale = false
			continue
		}
		r := &learnedRoute{peer: nh, since: now, ignored: m.ignoreReason(p, nh)}
		m.learned[p] = r
		switch {
		case r.ignored == "":
			out = append(out, Change{Prefix: p, Peer: nh, Learned: now})
		case old != nil && old.ignored == "":
			out = append(out, Change{Prefix: p, Learned: now, Withdrawn: true})
		}
		if r.ignored != "" {
			m.log.Warn("bgp: ignoring a learned route", "prefix", p, "peer", nh, "reason", r.ignored)
		}
	}
	m.emit(out)
}

// sweep withdraws the stale routes whose prefix which selects, and stops
// the stale timer when none is left.
func (m *Member) sweep(which func(netip.Prefix) bool) {
	now := m.cfg.Now()
	var out []Change
	for _, p := range slices.SortedFunc(maps.Keys(m.learned), comparePrefix) {
		r := m.learned[p]
		if !r.stale || !which(p) {
			continue
		}
		delete(m.learned, p)
		if r.ignored == "" {
			out = append(out, Change{Prefix: p, Learned: now, Withdrawn: true})
		}
	}
	if len(out) > 0 {
		m.log.Info("bgp: withdrew stale routes the controller did not advertise again", "routes", len(out))
	}
	if !slices.ContainsFunc(slices.Collect(maps.Values(m.learned)), func(r *learnedRoute) bool { return r.stale }) {
		stopTimer(m.staleTimer)
		m.staleC = nil
	}
	m.emit(out)
}

// MemberStatus is a Member's state, as `mpsactl routes` shows it.
type MemberStatus struct {
	// Controller is the controller's control address, the zero Addr
	// while the control child is down.
	Controller netip.Addr `json:"controller,omitzero"`
	// Session is the BGP session state (established, active, idle...).
	Session string `json:"session"`
	// Since is when the session was last established.
	Since time.Time `json:"since,omitzero"`
	// Advertised are the prefixes this member advertises, with the next
	// hop (its underlay).
	Advertised []Route `json:"advertised"`
	// Learned are the routes learned from the controller, including the
	// stale and ignored ones.
	Learned []Route `json:"learned"`
	// LastError is the last error in applying a change, if any.
	LastError string `json:"last_error,omitempty"`
}

// Status returns the member's state and learned routes.
func (m *Member) Status() (MemberStatus, error) {
	var st MemberStatus
	err := m.run.do(func() {
		st.Controller = m.ctl
		st.Session = sessionName(m.state, m.ctl.IsValid())
		if m.state == bgppkt.BGP_FSM_ESTABLISHED {
			st.Since = m.upSince
		}
		for _, p := range slices.SortedFunc(maps.Keys(m.advertised), comparePrefix) {
			st.Advertised = append(st.Advertised, Route{Prefix: p, Peer: m.advertised[p], Origin: OriginBGP})
		}
		st.Learned = m.routes()
		st.LastError = m.lastErr
	})
	return st, err
}

// Routes returns the learned routes, for PeerTable.Routes.
func (m *Member) Routes() ([]Route, error) {
	var out []Route
	err := m.run.do(func() { out = m.routes() })
	return out, err
}

func (m *Member) routes() []Route {
	out := make([]Route, 0, len(m.learned))
	for _, p := range slices.SortedFunc(maps.Keys(m.learned), comparePrefix) {
		r := m.learned[p]
		out = append(out, Route{Prefix: p, Peer: r.peer, Origin: OriginBGP, Since: r.since, Stale: r.stale, Ignored: r.ignored})
	}
	return out
}

// sessionName is the state as status shows it.
func sessionName(s bgppkt.FSMState, configured bool) string {
	if !configured {
		return "down"
	}
	switch s {
	case bgppkt.BGP_FSM_ESTABLISHED:
		return "established"
	case bgppkt.BGP_FSM_OPENCONFIRM:
		return "openconfirm"
	case bgppkt.BGP_FSM_OPENSENT:
		return "opensent"
	case bgppkt.BGP_FSM_ACTIVE:
		return "active"
	case bgppkt.BGP_FSM_CONNECT:
		return "connect"
	}
	return "idle"
}
