package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpsa/mpsa/api"
	"github.com/mpsa/mpsa/internal/metrics"
	"github.com/mpsa/mpsa/internal/version"
	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/vici"
	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/protect"
)

// DataPlaneFactory builds the data plane of a member group. local is the
// member's underlay address: the group's configured underlay, or else the
// local address of its IKE SA with the controller.
type DataPlaneFactory func(ctx context.Context, g *swanctl.Group, local netip.Addr, log *slog.Logger) (xfrm.DataPlane, error)

// DataPlaneFlusher removes what the data plane of a member group left in
// the kernel, without the data plane (xfrm.DataPlane.Flush).
type DataPlaneFlusher func(ctx context.Context, g *swanctl.Group) error

// Options configure a Server.
type Options struct {
	// Config is the loaded configuration.
	Config *swanctl.Config
	// NewDataPlane builds member data planes; required for members.
	NewDataPlane DataPlaneFactory
	// FlushDataPlane removes the kernel objects (the kill switch) of a
	// member group that is removed from the configuration when this run
	// never built its data plane; optional.
	FlushDataPlane DataPlaneFlusher
	// Logger; slog.Default() if nil.
	Logger *slog.Logger
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Rand is the source of SPIs, nonces and SK_d; crypto/rand if nil.
	Rand io.Reader
	// Backoff of control requests; mpsa.DefaultBackoff() if zero.
	Backoff mpsa.Backoff
	// Metrics, if set, receives the daemon's metrics; it is served when
	// the configuration names metrics_listen.
	Metrics *metrics.Metrics
	// Verifier proves that a control child protects the control
	// addresses; nil opens xfrm/protect's in mpsad's network namespace
	// at Run. Tests give their own.
	Verifier ControlVerifier
	// Watchdog, if set, is called from the main loop at least every
	// WatchdogInterval (systemd's watchdog keep-alive).
	Watchdog         func()
	WatchdogInterval time.Duration
}

// ControlVerifier proves that charon's control CHILD_SA protects the
// control addresses (xfrm/protect.Verifier), or says why not.
type ControlVerifier interface {
	Verify(ctx context.Context, c protect.Child, libipsec bool) (protect.Proof, error)
}

// Server is mpsad's engine. Run drives it; Status and Rekey may be called
// from any goroutine while it runs.
//
// One goroutine, the loop, owns all state. Its work grows with what
// changed, not with the number of members: charon's changes arrive as
// deltas (vici.Update.Changed and Removed) that the VICI source turns into
// control-up and control-down events for the groups of each connection; a
// datagram finds its group and member with two map look-ups (by its
// destination and source, then its source); every timer is a deadline on one heap; pushes leave through one token
// bucket (push_rate). docs/design.md, "The engine", has the picture and
// docs/scale.md the figures.
type Server struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	cfg         *swanctl.Config
	connected   bool
	ctlIf       int       // cached index of cfg.ControlInterface, 0 when not known
	ctlIfLookup time.Time // when ctlIf was last looked up

	tr *Transport
	// out sends control datagrams: the transport, or a test's pipe.
	out interface {
		Send(b []byte, src netip.Addr, dst netip.AddrPort) error
	}
	// groups in configuration order, by connection name, and by the
	// control addresses of their control children: a datagram goes to
	// the group of its destination and source, the local and the remote
	// control address (a controller's groups often share one local
	// address, each member has its own remote one). Two groups share a
	// pair only when charon gave two connections the same control
	// addresses.
	groups []group
	byConn map[string][]group
	byPair map[addrPair][]group
	// vici follows charon's IKE SAs and feeds the groups.
	vici  *viciSource
	sched deadlines
	pacer *pacer
	drops *dropLog // datagrams that match no group

	updates *viciInbox
	// bgpIn carries the route changes of the members' BGP speakers to
	// the loop.
	bgpIn *bgpInbox
	// runCtx is Run's context: what lives as long as the server (the
	// BGP speakers) runs under it.
	runCtx context.Context
	// bgpStopping are the reflectors abandoned, by port, whose GoBGP
	// may still be stopping (ctlBGP.stop).
	bgpStopping map[uint16]<-chan struct{}
	// said carries charon's messages about CHILD_SA failures from the
	// watcher's log session to the loop; full, they are dropped.
	said chan vici.LogEvent
	// charon is what charon said of itself in the current VICI
	// session; nil while disconnected and until charon answers.
	charon *vici.Charon
	// watcher follows charon over VICI (nil until Run). missingGroups
	// counts the groups with an IKE SA that lacks its control child:
	// while there are any, the watcher follows charon's log, to hear
	// charon say why; logOff ends that a while after the last went.
	watcher       *vici.Watcher
	missingGroups int
	followingLog  bool
	logOff        deadline
	// initiates are control children to ask charon for again (member
	// groups, see memGroup.retryChild), taken by one goroutine of Run;
	// full, a request is dropped (the group asks again later).
	initiates chan childRef
	// verifier proves control children (Options.Verifier).
	verifier  ControlVerifier
	datagrams chan Datagram
	calls     chan func()
	reloads   chan *swanctl.Config

	readyOnce sync.Once
	ready     chan struct{}
	// overload counts datagrams dropped because the loop was behind; it
	// is written by the transport's goroutines. The loop hands what is new
	// of it to drops (noteOverload), which logs it like any other reason.
	overload     atomic.Uint64
	overloadSeen uint64
}

// dropOverload is the drop reason of datagrams the transport could not
// hand to the loop because the loop was behind. It is logged and shown in
// the status like the other reasons, but not exported as a metrics reason
// (metrics.DropReasons does not list it).
const dropOverload = "overload"

// New checks the options and prepares a server; nothing runs until Run.
func New(opts Options) (*Server, error) {
	if opts.Config == nil {
		return nil, errors.New("no configuration")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.Backoff == (mpsa.Backoff{}) {
		opts.Backoff = mpsa.DefaultBackoff()
	}
	if opts.Config.Role == swanctl.RoleMember && opts.NewDataPlane == nil {
		return nil, errors.New("a member needs a data plane factory")
	}
	s := &Server{
		opts:        opts,
		log:         opts.Logger,
		now:         opts.Now,
		cfg:         opts.Config,
		byConn:      map[string][]group{},
		byPair:      map[addrPair][]group{},
		updates:     newVICIInbox(),
		bgpIn:       newBGPInbox(),
		bgpStopping: map[uint16]<-chan struct{}{},
		runCtx:      context.Background(),
		datagrams:   make(chan Datagram, 256),
		said:        make(chan vici.LogEvent, 256),
		initiates:   make(chan childRef, 16),
		calls:       make(chan func()),
		reloads:     make(chan *swanctl.Config),
		ready:       make(chan struct{}),
	}
	s.verifier = opts.Verifier
	s.vici = newVICISource(func(conn string) []group { return s.byConn[conn] }, s.verifyControl)
	s.vici.verifyBGP = s.verifyBGP
	s.pacer = newPacer(opts.Config.PushRate, opts.Config.PushBurst, s.now())
	s.pacer.wake.fire = func(_ context.Context, now time.Time) { s.pace(now) }
	s.drops = s.newDropLog(s.log)
	s.logOff.fire = func(context.Context, time.Time) {
		if s.missingGroups == 0 {
			s.followLog(false)
		}
	}
	return s, nil
}

// newDropLog returns a drop log that counts into the metrics and whose
// held-back lines are flushed by a deadline.
func (s *Server) newDropLog(log *slog.Logger) *dropLog {
	d := newDropLog(log, 10*time.Second)
	d.counted = s.opts.Metrics.ControlDropped
	d.held = func(at time.Time) { s.sched.setEarlier(&d.flushAt, at) }
	d.flushAt.fire = func(_ context.Context, now time.Time) {
		d.flush(now)
		if t, ok := d.nextFlush(); ok {
			s.sched.set(&d.flushAt, t)
		}
	}
	return d
}

// Ready is closed once the server has its control port and status socket
// open and has heard from charon over VICI: the moment to tell systemd
// READY=1.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// viciPath turns the configured VICI URI into a socket path.
func viciPath(uri string) (string, error) {
	if p, ok := strings.CutPrefix(uri, "unix://"); ok {
		return p, nil
	}
	return "", fmt.Errorf("VICI URI %q: only unix:// sockets are supported", uri)
}

// Run runs the server until ctx is done, then removes what it installed
// and returns. It fails early if the control port or the status socket
// cannot be opened.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.runCtx = ctx
	sock, err := viciPath(s.cfg.VICI)
	if err != nil {
		return err
	}
	if s.verifier == nil {
		v, err := protect.New()
		if err != nil {
			return fmt.Errorf("cannot verify control children (netlink): %w", err)
		}
		defer v.Close()
		s.verifier = v
	}
	if s.tr, err = Listen(ctx, s.cfg.ControlPort); err != nil {
		return err
	}
	s.out = s.tr
	if name := s.cfg.ControlInterface; name != "" {
		if ifi, err := net.InterfaceByName(name); err != nil {
			// charon's TUN may not exist yet; looked up when the
			// first datagram arrives (see fromControlInterface).
			s.log.Warn("control interface not found yet", "interface", name, "err", err)
		} else {
			s.ctlIf, s.ctlIfLookup = ifi.Index, s.now()
		}
	}
	if err := s.applyConfig(ctx, s.cfg); err != nil {
		s.tr.Close()
		return err
	}
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := s.tr.Run(ctx, s.deliver); err != nil && ctx.Err() == nil {
			errc <- err
		}
	}()
	w := vici.NewWatcher(vici.WatcherOptions{Socket: sock, Logger: s.log, OnUpdate: s.updates.put, OmitSnapshots: true,
		OnChildFailure: func(ev vici.LogEvent) {
			select {
			case s.said <- ev:
			default:
			}
		}})
	// The loop has not started: this goroutine still owns the state.
	s.watcher = w
	w.FollowLog(s.followingLog)
	go func() {
		defer wg.Done()
		w.Run(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.initiateLoop(ctx, sock)
	}()
	if s.cfg.MetricsListen != "" && s.opts.Metrics != nil {
		go func() {
			if err := metrics.Serve(ctx, s.cfg.MetricsListen, s.opts.Metrics.Registry()); err != nil && ctx.Err() == nil {
				s.log.Error("metrics endpoint", "listen", s.cfg.MetricsListen, "err", err)
			}
		}()
		s.log.Info("serving metrics", "listen", s.cfg.MetricsListen)
	}
	statusUp := make(chan error, 1)
	go func() {
		defer wg.Done()
		if err := ServeStatus(ctx, s.cfg.StatusSocket, s, statusUp); err != nil && ctx.Err() == nil {
			errc <- err
		}
	}()
	if err := <-statusUp; err != nil {
		cancel()
		wg.Wait()
		s.shutdown()
		return err
	}
	err = s.loop(ctx, errc)
	cancel()
	wg.Wait()
	s.shutdown()
	// Datagrams the loop never took hold what they hold until wiped.
	for {
		select {
		case d := <-s.datagrams:
			d.Wipe()
		default:
			return err
		}
	}
}

// fromControlInterface reports whether a datagram arrived on the control
// interface (always true when none is configured). The index is cached;
// charon recreates its TUN device with a new index when it restarts, so an
// index that does not match makes it look the name up again, at most once
// a second (a look-up dumps every link, and forged datagrams must not be
// able to make mpsad do that at their rate; the peer retransmits anyway).
func (s *Server) fromControlInterface(now time.Time, ifindex int) bool {
	if s.cfg.ControlInterface == "" || (s.ctlIf != 0 && s.ctlIf == ifindex) {
		return true
	}
	if now.Sub(s.ctlIfLookup) < time.Second {
		return false
	}
	s.ctlIfLookup = now
	s.ctlIf = 0
	if ifi, err := net.InterfaceByName(s.cfg.ControlInterface); err == nil {
		s.ctlIf = ifi.Index
	}
	return s.ctlIf != 0 && s.ctlIf == ifindex
}

// deliver runs on the transport's goroutines.
func (s *Server) deliver(d Datagram) {
	select {
	case s.datagrams <- d:
	default:
		// The loop is behind: drop rather than block the socket (or
		// the shutdown, which waits for this goroutine).
		s.overload.Add(1)
		d.Wipe()
	}
}

func (s *Server) callCtx(ctx context.Context, fn func()) error {
	done := make(chan struct{})
	select {
	case s.calls <- func() { fn(); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	}
	<-done
	return nil
}

// Reload applies a new configuration: groups added, removed or changed
// are set up, torn down or rebuilt; unchanged groups keep their state.
// The role, control port, VICI socket and status socket cannot change
// without a restart.
func (s *Server) Reload(ctx context.Context, cfg *swanctl.Config) error {
	var err error
	if cerr := s.callCtx(ctx, func() { err = s.reload(ctx, cfg) }); cerr != nil {
		return cerr
	}
	return err
}

func (s *Server) loop(ctx context.Context, errc <-chan error) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var watchdog <-chan time.Time
	if s.opts.Watchdog != nil && s.opts.WatchdogInterval > 0 {
		t := time.NewTicker(s.opts.WatchdogInterval)
		defer t.Stop()
		watchdog = t.C
	}
	for {
		// Every event may set or move a deadline (a request sent or
		// answered, an SA received, a group added); the earliest is
		// the top of the heap, so re-arming costs nothing.
		timer.Reset(s.nextDeadline())
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case <-s.updates.ready:
			if b, ok := s.updates.take(); ok {
				s.apply(ctx, b)
				s.updates.done(b)
			}
		case d := <-s.datagrams:
			s.onDatagram(ctx, d)
			// A PUT carries SK_d and the nonce: nothing keeps the
			// datagram once it is handled.
			d.Wipe()
		case <-s.bgpIn.ready:
			s.onBGP(ctx)
		case ev := <-s.said:
			s.vici.said(s.now(), ev)
		case fn := <-s.calls:
			fn()
		case <-timer.C:
			s.onTimers(ctx)
		case <-watchdog:
			s.opts.Watchdog()
		}
	}
}

// onUpdate applies one update from the watcher (tests hand them in
// directly; the loop takes merged batches from the inbox).
func (s *Server) onUpdate(ctx context.Context, u vici.Update) {
	var b viciBatch
	b.add(u)
	s.apply(ctx, &b)
}

// apply applies what the watcher reported: a resync compares the listing
// once with what the VICI source knows; changes touch the IKE SAs they
// name, stored ones before removed ones, so that a member moving to a
// new IKE SA is never seen leaving. While charon is unreachable the
// groups keep what they know until charon is back and resynced.
func (s *Server) apply(ctx context.Context, b *viciBatch) {
	now := s.now()
	if b.lost {
		// What charon said of itself held for that session: a charon
		// that comes back may be another (restarted, with other
		// plugins), and until it says so (b.charon) nothing is proven
		// against the old one.
		s.charon = nil
		s.vici.forgetProofs()
	}
	if b.charon != nil && b.charon != s.charon {
		// First, so that the control children of this batch are
		// verified against the charon that reported them.
		s.charon = b.charon
		s.log.Info("charon", "version", s.charon.Version.Version, "plugins", strings.Join(s.charon.Plugins, " "),
			"kernel_libipsec", s.charon.HasPlugin("kernel-libipsec"))
		s.vici.forgetProofs()
		for _, g := range s.groups {
			g.charonChanged(s.charon)
		}
	}
	if b.lost && s.connected {
		s.log.Warn("lost charon's VICI socket; keeping the shared SAs, reconnecting")
	}
	if b.resync {
		s.vici.resync(ctx, now, b.full)
	}
	for _, c := range b.changes {
		if !c.removed {
			s.vici.set(ctx, now, c.sa)
		}
	}
	for id, c := range b.changes {
		if c.removed {
			s.vici.remove(ctx, now, id)
		}
	}
	s.connected = b.connected
	if s.connected {
		s.readyOnce.Do(func() { close(s.ready) })
	}
}

// logLinger is how long the server keeps following charon's log after
// the last group's control child came back: a child that fails again soon
// is then explained at once.
const logLinger = 30 * time.Second

// childrenMissing notes that a group now has (+1) or no longer has (-1)
// an IKE SA without its control child. charon's log is followed only
// while some group has one: charon formats and sends every log line to a
// subscriber, which costs it as much CPU again when a thousand IKE SAs
// come up.
func (s *Server) childrenMissing(d int) {
	s.missingGroups += d
	if s.missingGroups > 0 {
		s.sched.stop(&s.logOff)
		s.followLog(true)
		return
	}
	s.sched.set(&s.logOff, s.now().Add(logLinger))
}

func (s *Server) followLog(on bool) {
	if s.followingLog == on {
		return
	}
	s.followingLog = on
	if s.watcher != nil {
		s.watcher.FollowLog(on)
	}
}

// childRef names a CHILD_SA of a connection.
type childRef struct{ conn, child string }

// initiate asks charon, off the loop, to establish a control child
// again. It reports false when the request was not queued (the queue is
// full: charon is slow to answer the requests before it).
func (s *Server) initiate(conn, child string) bool {
	select {
	case s.initiates <- childRef{conn, child}:
		return true
	default:
		return false
	}
}

// initiateLoop carries out initiate's requests over VICI, one at a time,
// each on a session of its own (they are rare: each group asks at most
// every 10 s, backing off to 10 min).
func (s *Server) initiateLoop(ctx context.Context, sock string) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-s.initiates:
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			c, err := vici.Dial(cctx, sock)
			if err == nil {
				err = c.InitiateChild(cctx, r.conn, r.child)
				c.Close()
			}
			cancel()
			if err != nil && ctx.Err() == nil {
				s.log.Warn("could not ask charon to establish the control child again", "connection", r.conn, "child", r.child, "err", err)
			}
		}
	}
}

// verifyControl proves that the control child c protects the control
// addresses, or says why it cannot. Without charon's plugin list mpsad
// cannot tell whether charon or the kernel does ESP, so it refuses.
func (s *Server) verifyControl(ctx context.Context, c vici.Control) (proven, error) {
	return s.verify(ctx, c, protect.Flow{})
}

// verify proves that control child c protects flow f between the control
// addresses (the zero Flow: the control exchange).
func (s *Server) verify(ctx context.Context, c vici.Control, f protect.Flow) (proven, error) {
	if s.charon == nil {
		return proven{}, errors.New("charon did not say which plugins it loaded (VICI stats), so mpsad cannot tell whether the kernel or charon's kernel-libipsec protects the control child; it refuses until charon answers")
	}
	ch := c.Child
	p, err := s.verifier.Verify(ctx, protect.Child{
		Name: ch.Name, ReqID: ch.ReqID, Protocol: ch.Protocol, Mode: ch.Mode, EncrAlg: ch.EncrAlg,
		IfIDIn: ch.IfIDIn, IfIDOut: ch.IfIDOut, MarkIn: ch.MarkIn, MarkOut: ch.MarkOut,
		Local: c.Local, Remote: c.Remote, Port: s.cfg.ControlPort, Flow: f,
		LocalTS: ch.LocalTSText, RemoteTS: ch.RemoteTSText,
	}, s.charon.HasPlugin("kernel-libipsec"))
	if err != nil {
		return proven{}, err
	}
	return proven{Control: c, admission: admission{ifIndex: p.IfIndex, srcPort: p.SrcPort}, ifName: p.IfName, how: p.How}, nil
}

// noteOverload hands the datagrams dropped for overload since the last
// call to the drop log.
func (s *Server) noteOverload(now time.Time) {
	n := s.overload.Load()
	if n == s.overloadSeen {
		return
	}
	delta := n - s.overloadSeen
	s.overloadSeen = n
	s.drops.add(now, dropOverload, delta, "detail", "mpsad's loop was behind and its receive queue was full")
}

// drop drops a datagram that no group claims (see dropLog.drop).
func (s *Server) drop(now time.Time, reason string, attrs ...any) {
	s.drops.drop(now, reason, attrs...)
}

// onDatagram hands a datagram to the group it belongs to, or drops it. It
// reports whether a group handled it. Its group is one map look-up away,
// by its destination and source address, and the group finds the sender
// with one more: the cost depends neither on the number of members nor
// on the number of groups.
func (s *Server) onDatagram(ctx context.Context, d Datagram) bool {
	now := s.now()
	s.noteOverload(now)
	if !s.fromControlInterface(now, d.IfIndex) {
		s.drop(now, metrics.DropNotProtected, "src", d.Src, "ifindex", d.IfIndex, "want_interface", s.cfg.ControlInterface)
		return false
	}
	if !s.connected {
		s.drop(now, metrics.DropNoIKESA, "src", d.Src, "detail", "not connected to charon")
		return false
	}
	for _, g := range s.byPair[addrPair{local: d.Dst, remote: d.Src.Addr()}] {
		if g.onDatagram(ctx, now, d) {
			return true
		}
	}
	s.drop(now, metrics.DropNoControlChild, "src", d.Src, "dst", d.Dst, "detail", "not the address of an installed control child")
	return false
}

// onTimers fires every deadline that is due.
func (s *Server) onTimers(ctx context.Context) {
	now := s.now()
	s.noteOverload(now)
	s.sched.runDue(ctx, now)
}

// nextDeadline is how long until the earliest deadline, at most a minute,
// at least a millisecond. It is measured on the server's clock.
func (s *Server) nextDeadline() time.Duration {
	now := s.now()
	next := now.Add(time.Minute)
	if t, ok := s.sched.next(); ok && t.Before(next) {
		next = t
	}
	return max(next.Sub(now), time.Millisecond)
}

func (s *Server) send(b []byte, src netip.Addr, dst netip.Addr) {
	if err := s.out.Send(b, src, netip.AddrPortFrom(dst, s.cfg.ControlPort)); err != nil {
		s.log.Warn("send control datagram", "dst", dst, "err", err)
	}
}

// receive takes a datagram claimed by the control session sess between
// the control addresses local and remote: it checks that the datagram
// came the way the control child's proof admits (its interface, its
// source port), then decodes it and checks that its header belongs to
// the session; if not, it is dropped with a counted reason (member, if
// set, names the sender in the log line). A retransmitted request is
// answered at once from the session's cache. It returns the message and
// its kind, and false when nothing more is to be done with it. Every
// control datagram goes through here, so that no caller can skip the
// proof.
func (s *Server) receive(now time.Time, d Datagram, adm admission, sess *mpsa.Session, local, remote netip.Addr, drops *dropLog, member string) (*mpsa.Message, mpsa.Kind, bool) {
	var attrs []any
	if member != "" {
		attrs = []any{"member", member}
	}
	if !adm.admits(d) {
		drops.drop(now, metrics.DropNotProtected, append(attrs, "src", d.Src, "ifindex", d.IfIndex,
			"detail", "not the way the control child protects (its interface or source port)")...)
		return nil, 0, false
	}
	msg, err := mpsa.ParseMessage(d.Data)
	if err != nil {
		drops.drop(now, metrics.DropMalformed, append(attrs, "err", err)...)
		return nil, 0, false
	}
	if r := sess.CheckHeader(msg.Header); r != "" {
		drops.drop(now, headerDropReason(r), append(attrs, "detail", r)...)
		return nil, 0, false
	}
	in := sess.Receive(msg)
	if in.Kind == mpsa.RepeatedRequest {
		s.send(in.Reply, local, remote)
		return msg, in.Kind, false
	}
	return msg, in.Kind, true
}

// headerDropReason maps a Session.CheckHeader reason to a metrics reason.
func headerDropReason(r string) string {
	if r == "IKE SPIs" {
		return metrics.DropSPIMismatch
	}
	return metrics.DropMalformed
}

// applyConfig builds the groups of cfg (at start).
func (s *Server) applyConfig(ctx context.Context, cfg *swanctl.Config) error {
	for _, g := range cfg.Groups {
		if err := s.addGroup(ctx, g); err != nil {
			s.shutdown()
			return err
		}
	}
	return nil
}

// addGroup sets a group up and feeds it what the sources know now.
func (s *Server) addGroup(ctx context.Context, g *swanctl.Group) error {
	log := s.log.With("group", g.Name)
	s.opts.Metrics.AddGroup(g.Name)
	if s.cfg.Role == swanctl.RoleController {
		cg, err := newCtlGroup(s, g, s.opts.Rand, log)
		if err != nil {
			s.opts.Metrics.RemoveGroup(g.Name)
			return fmt.Errorf("group %s: %w", g.Name, err)
		}
		if cg.bgp != nil {
			s.opts.Metrics.SetBGPSource(g.Name, s.bgpMetrics(cg))
		}
		s.attach(ctx, cg)
		return nil
	}
	mg := newMemGroup(s, g, log)
	mg.metrics.SetTrafficSource(g.Name, func(ctx context.Context) ([]xfrm.Counters, error) {
		var dp xfrm.DataPlane
		if err := s.callCtx(ctx, func() { dp = mg.dp }); err != nil || dp == nil {
			return nil, err
		}
		return dp.Counters(ctx)
	})
	mg.metrics.SetDropSource(g.Name, func(ctx context.Context) (map[string]uint64, error) {
		var dc dropCounter
		err := s.callCtx(ctx, func() { dc, _ = mg.dp.(dropCounter) })
		if err != nil || dc == nil {
			return nil, err
		}
		return dc.DropCounts(), nil
	})
	mg.setStatic(staticPeers(g), s.now())
	mg.startBGP()
	s.attach(ctx, mg)
	return nil
}

// attach adds a group set up to the server's lists and feeds it the
// control children charon has now.
func (s *Server) attach(ctx context.Context, g group) {
	s.groups = append(s.groups, g)
	s.reindex()
	if s.charon != nil {
		g.charonChanged(s.charon)
	}
	s.vici.feed(ctx, s.now(), g)
}

// addrPair is a local and a remote control address: the two ends of a
// control child.
type addrPair struct{ local, remote netip.Addr }

// listen routes datagrams from the remote to the local control address
// of p to g, which calls it once for each pair it has control children
// on.
func (s *Server) listen(p addrPair, g group) {
	s.byPair[p] = append(s.byPair[p], g)
}

// unlisten undoes listen.
func (s *Server) unlisten(p addrPair, g group) {
	gs := slices.DeleteFunc(s.byPair[p], func(x group) bool { return x == g })
	if len(gs) == 0 {
		delete(s.byPair, p)
		return
	}
	s.byPair[p] = gs
}

// reindex rebuilds the groups by connection (at setup and reload).
func (s *Server) reindex() {
	clear(s.byConn)
	for _, g := range s.groups {
		c := g.config().Connection
		s.byConn[c] = append(s.byConn[c], g)
	}
}

func (s *Server) reload(ctx context.Context, cfg *swanctl.Config) error {
	old := s.cfg
	switch {
	case cfg.Role != old.Role:
		return fmt.Errorf("role changed from %s to %s: restart mpsad to apply", old.Role, cfg.Role)
	case cfg.ControlPort != old.ControlPort:
		return fmt.Errorf("control_port changed: restart mpsad to apply")
	case cfg.VICI != old.VICI || cfg.StatusSocket != old.StatusSocket:
		return fmt.Errorf("vici or status_socket changed: restart mpsad to apply")
	}
	// Check the group SA parameters of every controller group that is
	// added or changed before changing anything: a group the protocol
	// core refuses must not cost the running one.
	if cfg.Role == swanctl.RoleController {
		for _, n := range cfg.Groups {
			if g := s.group(n.Name); g != nil && sameGroup(g.config(), n) {
				continue
			}
			if err := groupParams(n).Validate(); err != nil {
				return fmt.Errorf("group %s: %w; keeping the running configuration", n.Name, err)
			}
		}
	}
	if cfg.MetricsListen != old.MetricsListen {
		s.log.Warn("metrics_listen changed; it takes effect at the next restart", "running", old.MetricsListen, "configured", cfg.MetricsListen)
		cfg.MetricsListen = old.MetricsListen
	}
	s.cfg = cfg
	s.ctlIf, s.ctlIfLookup = 0, time.Time{} // control_interface may have changed
	s.pacer.configure(cfg.PushRate, cfg.PushBurst)
	keep := s.groups[:0]
	for _, g := range s.groups {
		name := g.config().Name
		n := cfg.Group(name)
		if n != nil && g.reconfigure(ctx, n) {
			keep = append(keep, g)
			continue
		}
		// Removed, or changed in a way the group cannot apply in place:
		// it is torn down (and set up anew below).
		g.retire(ctx, n)
		s.opts.Metrics.RemoveGroup(name)
	}
	clear(s.groups[len(keep):])
	s.groups = keep
	s.reindex()
	var errs []error
	for _, n := range cfg.Groups {
		if s.hasGroup(n.Name) {
			continue
		}
		s.log.Info("setting up group", "group", n.Name)
		if err := s.addGroup(ctx, n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// group returns the group called name, or nil.
func (s *Server) group(name string) group {
	for _, g := range s.groups {
		if g.config().Name == name {
			return g
		}
	}
	return nil
}

func (s *Server) hasGroup(name string) bool { return s.group(name) != nil }

func (s *Server) shutdown() {
	for _, g := range s.groups {
		g.close()
	}
	s.groups = nil
	s.reindex()
}

// Status implements api.API.
func (s *Server) Status(ctx context.Context) (api.Status, error) {
	var st api.Status
	views := map[int]bgpView{}
	if err := s.callCtx(ctx, func() {
		st = s.status(ctx)
		for i, g := range s.groups {
			if v, ok := g.view(); ok {
				views[i] = v
			}
		}
	}); err != nil {
		return st, err
	}
	s.fillBGP(ctx, &st, views)
	return st, nil
}

// status is Status on the loop's goroutine.
func (s *Server) status(ctx context.Context) api.Status {
	s.noteOverload(s.now())
	st := api.Status{Role: string(s.cfg.Role), Version: version.Version, VICIConnected: s.connected, Drops: s.drops.snapshot(), Groups: []api.GroupStatus{}}
	for _, g := range s.groups {
		st.Groups = append(st.Groups, g.status(ctx))
	}
	return st
}

// Rekey implements api.API: a controller group rekeys now and pushes the
// new SA to its members.
func (s *Server) Rekey(ctx context.Context, name string) (string, error) {
	var (
		spi string
		err error
	)
	if cerr := s.callCtx(ctx, func() {
		if g, ok := s.group(name).(*ctlGroup); ok {
			spi, err = g.rekey(s.now(), metrics.RekeyManual)
			return
		}
		if s.cfg.Role != swanctl.RoleController {
			err = fmt.Errorf("this mpsad is a %s; rekey on the controller", s.cfg.Role)
			return
		}
		err = fmt.Errorf("group %q: %w", name, api.ErrNoGroup)
	}); cerr != nil {
		return "", cerr
	}
	return spi, err
}

// spiString formats an SPI for logs and status as the metrics do; the
// empty string for 0, no SPI.
func spiString(spi uint32) string {
	if spi == 0 {
		return ""
	}
	return metrics.SPIString(spi)
}
