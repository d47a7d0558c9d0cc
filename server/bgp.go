package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/mpsa/mpsa/bgp"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/vici"
	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/protect"
	"golang.org/x/sys/unix"
)

// BGP is one more source (docs/bgp.md, "The engine"): on a member, a
// bgp.Member speaks to the controller over the control child and its
// learned routes reach the group through setPeers(sourceBGP, ...); on a
// controller, a bgp.Reflector has a neighbour for each member whose
// control child is up. Both are driven from the loop as the control
// children come and go; neither is ever waited for there (their calls
// are queued), and what they report (route changes) comes back to the
// loop through bgpInbox, never by calling a group from GoBGP's
// goroutines.

// sourceBGP names the peers a member group learned by BGP.
const sourceBGP = "bgp"

// bgpInbox carries the route changes of the members' speakers from their
// goroutines to the loop. It never blocks a speaker: the changes are
// queued, in order, until the loop takes them.
type bgpInbox struct {
	mu    sync.Mutex
	items []bgpItem
	ready chan struct{}
}

type bgpItem struct {
	to      *memBGP
	changes []bgp.Change
}

func newBGPInbox() *bgpInbox { return &bgpInbox{ready: make(chan struct{}, 1)} }

// put queues changes for the member speaker to.
func (in *bgpInbox) put(to *memBGP, changes []bgp.Change) {
	in.mu.Lock()
	in.items = append(in.items, bgpItem{to, changes})
	in.mu.Unlock()
	select {
	case in.ready <- struct{}{}:
	default:
	}
}

// take returns what is queued.
func (in *bgpInbox) take() []bgpItem {
	in.mu.Lock()
	defer in.mu.Unlock()
	items := in.items
	in.items = nil
	return items
}

// onBGP applies the route changes queued since the last call: each
// speaker's to its group's learned routes, then each group's peer table
// to its data plane once.
func (s *Server) onBGP(ctx context.Context) {
	touched := map[*memBGP]bool{}
	for _, it := range s.bgpIn.take() {
		if it.to.g.bgp != it.to {
			continue // a speaker the group has since replaced or closed
		}
		it.to.apply(it.changes)
		touched[it.to] = true
	}
	for mb := range touched {
		mb.g.setPeers(ctx, sourceBGP, mb.peers())
	}
}

// verifyBGP proves that control child c also protects the group's BGP
// session on port, or says why it does not.
func (s *Server) verifyBGP(ctx context.Context, c vici.Control, port uint16) (bgpProof, error) {
	p, err := s.verify(ctx, c, bgpFlow(s.cfg.Role, port))
	if err != nil {
		return bgpProof{}, err
	}
	return bgpProof{ifIndex: p.ifIndex, ifName: p.ifName, how: p.how}, nil
}

// bgpProof says how a control child protects a group's BGP session:
// ifIndex, if not 0, is the interface (ifName) its sockets must be bound
// to.
type bgpProof struct {
	ifIndex int
	ifName  string
	how     string
}

// memBGP is a member group's BGP speaker and what it learned, owned by
// the loop.
type memBGP struct {
	g   *memGroup
	cfg *swanctl.BGP
	sp  *bgp.Member
	// learned are the routes the speaker delivered (those it uses), by
	// prefix.
	learned map[netip.Prefix]bgp.Change
	// ctl, local and iface are what SetControllerOn was last given;
	// ctl is the zero Addr while the session is down.
	ctl, local netip.Addr
	iface      string
	// prefixes and underlay are what Advertise was last given.
	prefixes []netip.Prefix
	underlay netip.Addr
	// state is the file that keeps learned across restarts of mpsad;
	// dirty says it is behind, saveAt when it is written next.
	state  string
	dirty  bool
	saveAt deadline
}

// newMemBGP starts the BGP speaker of a member group with BGP on, with
// the routes the previous run of mpsad had learned (saveRoutes).
func newMemBGP(s *Server, g *memGroup) (*memBGP, error) {
	mb := &memBGP{g: g, cfg: g.cfg.BGP, learned: map[netip.Prefix]bgp.Change{}, state: bgpStatePath(s.cfg, g.cfg.Name)}
	mb.saveAt.fire = func(context.Context, time.Time) { mb.save() }
	cfg := bgp.MemberConfigFor(g.cfg.BGP, s.cfg.ControlInterface)
	cfg.Logger = g.log
	cfg.OnChange = func(cs []bgp.Change) { s.bgpIn.put(mb, cs) }
	sp, err := bgp.NewMember(cfg)
	if err != nil {
		return nil, err
	}
	if routes, err := loadRoutes(mb.state); err != nil {
		g.log.Warn("bgp: cannot read the routes of the previous run; learning them anew", "file", mb.state, "err", err)
	} else if len(routes) > 0 {
		for _, c := range routes {
			mb.learned[c.Prefix] = c
		}
		sp.Restore(routes)
		g.peers[sourceBGP] = mb.peers()
	}
	sp.Start(s.runCtx)
	mb.sp = sp
	return mb, nil
}

// apply records the speaker's changes; the state file follows within
// saveDelay.
func (mb *memBGP) apply(cs []bgp.Change) {
	for _, c := range cs {
		if c.Withdrawn {
			delete(mb.learned, c.Prefix)
			continue
		}
		mb.learned[c.Prefix] = c
	}
	if !mb.dirty {
		mb.dirty = true
		mb.g.s.sched.set(&mb.saveAt, mb.g.s.now().Add(saveDelay))
	}
}

// saveDelay gathers the route changes of a burst into one write of the
// state file.
const saveDelay = time.Second

// bgpStatePath is the file where a member group's learned routes outlive
// mpsad: beside the status socket (/run/mpsad by default), so that they
// last as long as the data plane's kill switch, which a reboot clears
// too.
func bgpStatePath(cfg *swanctl.Config, group string) string {
	return filepath.Join(filepath.Dir(cfg.StatusSocket), "bgp-"+group+".routes")
}

// save writes the learned routes to the state file, atomically.
func (mb *memBGP) save() {
	mb.g.s.sched.stop(&mb.saveAt)
	mb.dirty = false
	routes := make([]bgp.Change, 0, len(mb.learned))
	for _, p := range slices.SortedFunc(maps.Keys(mb.learned), comparePrefix) {
		routes = append(routes, mb.learned[p])
	}
	if err := saveRoutes(mb.state, routes); err != nil {
		mb.g.log.Warn("bgp: cannot keep the learned routes for the next run", "file", mb.state, "err", err)
	}
}

// forget removes the state file: the group no longer learns by BGP.
func (mb *memBGP) forget() {
	mb.g.s.sched.stop(&mb.saveAt)
	mb.dirty = false
	if err := os.Remove(mb.state); err != nil && !errors.Is(err, fs.ErrNotExist) {
		mb.g.log.Warn("bgp: remove the learned routes of the group", "file", mb.state, "err", err)
	}
}

// routesFile is the state file's content.
type routesFile struct {
	// Routes are the routes the speaker delivered, as it delivered them.
	Routes []bgp.Change `json:"routes"`
}

func saveRoutes(path string, routes []bgp.Change) error {
	b, err := json.Marshal(routesFile{Routes: routes})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// loadRoutes reads the state file; none is no route.
func loadRoutes(path string) ([]bgp.Change, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f routesFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []bgp.Change
	for _, c := range f.Routes {
		if c.Prefix.IsValid() && c.Peer.IsValid() && !c.Withdrawn {
			out = append(out, c)
		}
	}
	return out, nil
}

// peers are the learned routes as the group's source sourceBGP, in prefix
// order.
func (mb *memBGP) peers() []xfrm.Peer {
	ps := make([]xfrm.Peer, 0, len(mb.learned))
	for _, p := range slices.SortedFunc(maps.Keys(mb.learned), comparePrefix) {
		ps = append(ps, xfrm.Peer{Prefix: p, Underlay: mb.learned[p].Peer})
	}
	return ps
}

// advertise makes the speaker advertise prefixes with underlay as next
// hop, when either changed.
func (mb *memBGP) advertise(prefixes []netip.Prefix, underlay netip.Addr) {
	if !underlay.IsValid() || (underlay == mb.underlay && slices.Equal(prefixes, mb.prefixes)) {
		return
	}
	if err := mb.sp.Advertise(prefixes, underlay); err != nil {
		mb.g.log.Error("bgp: advertise", "err", err)
		return
	}
	mb.prefixes, mb.underlay = slices.Clone(prefixes), underlay
}

// up (re)starts the session with the controller over control child c,
// whose BGP proof is p.
func (mb *memBGP) up(c proven, p *bgpProof) {
	if c.Remote == mb.ctl && c.Local == mb.local && p.ifName == mb.iface {
		return
	}
	if err := mb.sp.SetControllerOn(c.Remote, c.Local, p.ifName); err != nil {
		mb.g.log.Error("bgp: controller", "err", err)
		return
	}
	mb.ctl, mb.local, mb.iface = c.Remote, c.Local, p.ifName
	mb.g.log.Info("bgp: session to the controller allowed over the control child", "controller", c.Remote, "protected_by", p.how)
}

// down ends the session; the learned routes stay (stale) in the speaker
// and in the data plane.
func (mb *memBGP) down() {
	if !mb.ctl.IsValid() {
		return
	}
	mb.sp.ControllerDown()
	mb.ctl, mb.local, mb.iface = netip.Addr{}, netip.Addr{}, ""
}

// close stops the speaker (mpsad stops, or BGP is turned off or changed)
// and brings the state file up to date.
func (mb *memBGP) close() {
	if err := mb.sp.Close(); err != nil {
		mb.g.log.Error("bgp: close", "err", err)
	}
	if mb.dirty {
		mb.save()
	}
}

// ctlBGP is a controller group's route reflector, owned by the loop.
type ctlBGP struct {
	g   *ctlGroup
	cfg *swanctl.BGP
	// r is the reflector, nil until the first member whose control child
	// protects BGP; bound is the index of the interface its listener is
	// bound to (0: none), boundName its name.
	r         *bgp.Reflector
	bound     int
	boundName string
	// added are the members the reflector has, by control address.
	added map[netip.Addr]bgp.MemberInfo
}

func newCtlBGP(g *ctlGroup) *ctlBGP {
	return &ctlBGP{g: g, cfg: g.cfg.BGP, added: map[netip.Addr]bgp.MemberInfo{}}
}

// start creates and starts the reflector with its listener bound to the
// interface of proof p (none when p has none).
func (cb *ctlBGP) start(p *bgpProof) error {
	cfg := bgp.ReflectorConfigFor(cb.cfg, p.ifName)
	cfg.Logger = cb.g.log
	// GoBGP keeps process-wide state: a reflector abandoned on this
	// port (this group's, or the one of a group set up again) must have
	// stopped before the new one starts GoBGP (bgp.ReflectorConfig.After).
	cfg.After = cb.g.s.bgpStopping[cb.cfg.Port]
	r, err := bgp.NewReflector(cfg)
	if err != nil {
		return err
	}
	if err := r.Start(cb.g.s.runCtx); err != nil {
		r.Close()
		return err
	}
	cb.r, cb.bound, cb.boundName = r, p.ifIndex, p.ifName
	cb.g.log.Info("bgp: route reflector ready", "port", cb.cfg.Port, "interface", p.ifName)
	return nil
}

// stop ends the reflector (bgp.Reflector.Abandon): its sessions and its
// listener are shut down at once, without a withdrawal, so that the
// members keep their routes and the port is free for a new reflector;
// GoBGP stops in the background, so that the loop never waits for its
// stop of many neighbours.
func (cb *ctlBGP) stop() {
	if cb.r == nil {
		return
	}
	cb.g.s.bgpStopping[cb.cfg.Port] = cb.r.Done()
	cb.r.Abandon()
	cb.r, cb.bound, cb.boundName = nil, 0, ""
}

// sync brings member m's neighbour in line with its newest link: added
// when the link's control child protects BGP, removed when it does not;
// it returns why BGP is refused for m, "" if it is not.
func (cb *ctlBGP) sync(m *ctlMember) string {
	l := m.cur()
	why := l.bgpErr
	if why == "" && l.bgp == nil {
		why = "not verified"
	}
	if why == "" && cb.r != nil && l.bgp.ifIndex != cb.bound {
		if len(cb.added) == 0 || (len(cb.added) == 1 && cb.has(m.addr)) {
			// Nobody holds the old binding (charon restarted with a
			// new TUN, say): listen on the new interface.
			cb.g.log.Info("bgp: the members' control children come over another interface now; restarting the route reflector on it",
				"was", cb.boundName, "now", l.bgp.ifName)
			cb.stop()
			clear(cb.added)
		} else {
			why = fmt.Sprintf("its control child protects BGP only on interface %s (index %d), but the route reflector listens on %s (index %d), where the other members' children arrive; one reflector listens on one interface: give every member's control child the same one (kernel-libipsec's TUN, or one XFRM interface)",
				l.bgp.ifName, l.bgp.ifIndex, cb.boundName, cb.bound)
		}
	}
	if why != "" {
		if cb.has(m.addr) {
			cb.remove(m.addr)
		}
		return why
	}
	if cb.r == nil {
		if err := cb.start(l.bgp); err != nil {
			cb.g.log.Error("bgp: start the route reflector", "err", err)
			return "the route reflector could not start: " + err.Error()
		}
	}
	info := bgp.MemberInfo{Addr: m.addr, Local: l.local, Identity: l.remoteID, Underlay: l.remoteHost}
	if old, ok := cb.added[m.addr]; ok && old == info {
		return ""
	}
	if err := cb.r.AddMember(info); err != nil {
		return err.Error()
	}
	cb.added[m.addr] = info
	return ""
}

func (cb *ctlBGP) has(a netip.Addr) bool {
	_, ok := cb.added[a]
	return ok
}

// remove drops the neighbour of the member at a: its routes are withdrawn
// from every other member.
func (cb *ctlBGP) remove(a netip.Addr) {
	if !cb.has(a) {
		return
	}
	delete(cb.added, a)
	if cb.r != nil {
		cb.r.RemoveMember(a)
	}
}

// reconfigure applies new BGP settings: a new policy to the running
// reflector; anything else stops it, and the caller syncs every member
// again, which starts a new one.
func (cb *ctlBGP) reconfigure(n *swanctl.BGP) {
	old := cb.cfg
	cb.cfg = n
	if cb.r != nil && samePolicyOnly(&swanctl.Group{BGP: old}, &swanctl.Group{BGP: n}) {
		if err := cb.r.SetPolicy(n.Rules()); err != nil {
			cb.g.log.Error("bgp: new policy", "err", err)
		}
		cb.g.log.Info("bgp: policy changed; applied to the routes the members sent", "rules", len(n.Policy))
		return
	}
	cb.g.log.Info("bgp: settings changed; restarting the route reflector")
	cb.stop()
	clear(cb.added)
}

// comparePrefix orders prefixes by address (IPv4 first), then length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// bgpFlow is the flow that carries a group's BGP session, seen from this
// side: a member connects from any port to the controller's port.
func bgpFlow(role swanctl.Role, port uint16) protect.Flow {
	if role == swanctl.RoleController {
		return protect.Flow{Proto: unix.IPPROTO_TCP, LocalPort: port}
	}
	return protect.Flow{Proto: unix.IPPROTO_TCP, RemotePort: port}
}

// bgpStatusTimeout bounds how long the status waits for a speaker busy
// with GoBGP (a reflector sending its table to many members).
const bgpStatusTimeout = 2 * time.Second

// within runs f on its own goroutine and waits for it for at most d: a
// BGP component's state is asked for outside the loop, and a busy one must
// not hold the answer to `mpsactl status` for long. It reports whether f
// returned in time.
func within(ctx context.Context, d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}
