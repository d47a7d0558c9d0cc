package vici_test

// Tests against real charon daemons in network namespaces (test/charon).
// They skip without root and strongSwan outside CI, and fail in CI.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	govici "github.com/strongswan/govici/vici"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/test/charon"
	"github.com/mpsa/mpsa/vici"
)

// patience bounds every wait for charon; generous, as CI machines vary.
const patience = 60 * time.Second

const controlPort = 4501

// recorder keeps every update a watcher delivered.
type recorder struct {
	mu      sync.Mutex
	updates []vici.Update
}

func (r *recorder) add(u vici.Update) {
	r.mu.Lock()
	r.updates = append(r.updates, u)
	r.mu.Unlock()
}

func (r *recorder) all() []vici.Update {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.updates)
}

// startWatcher runs a watcher on socket until the test ends.
func startWatcher(t *testing.T, socket string) (*vici.Watcher, *recorder) {
	t.Helper()
	rec := &recorder{}
	w := vici.NewWatcher(vici.WatcherOptions{
		Socket:   socket,
		Backoff:  vici.Backoff{Min: 20 * time.Millisecond, Max: 500 * time.Millisecond},
		OnUpdate: rec.add,
		Logger:   testLogger(t),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Watcher.Run returned %v, want context.Canceled", err)
		}
	})
	return w, rec
}

// waitControls waits until the snapshot has n control children of the lab's
// group and returns them.
func waitControls(t *testing.T, w *vici.Watcher, g charon.Group, n int) []vici.Control {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	s, err := w.Wait(ctx, func(s vici.Snapshot) bool {
		return len(s.Controls(g.ConnName(), g.ChildName())) == n
	})
	if err != nil {
		t.Fatalf("waiting for %d control children: %v; snapshot: %+v", n, err, s)
	}
	return s.Controls(g.ConnName(), g.ChildName())
}

func listSAs(t *testing.T, socket string) []vici.IKESA {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	c, err := vici.Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sas, err := c.ListSAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return sas
}

// TestControlChildren: two members establish IKE and the control child with
// the controller; the controller's watcher (started before any member)
// sees both with the right addresses, identities and SPIs, and a UDP
// datagram from each member's control address reaches the controller's
// control port through the control child.
func TestControlChildren(t *testing.T) {
	families := []struct {
		name string
		opts charon.LabOptions
	}{
		{"v4-over-v4", charon.LabOptions{Members: 2}},
		{"v6-over-v6", charon.LabOptions{Members: 2, Underlay6: true, Control6: true}},
		{"v4-over-v6", charon.LabOptions{Members: 2, Underlay6: true}},
	}
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			lab := charon.NewLab(t, fam.opts)
			g := lab.Group
			ctl := charon.Start(t, lab.Controller.NS, charon.Config{SwanctlConf: g.ControllerConf()})
			w, rec := startWatcher(t, ctl.SocketPath())
			var capture *rawCapture
			suffix := map[string]string{"v4-over-v4": "", "v6-over-v6": "-v6"}
			if sfx, ok := suffix[fam.name]; ok && (sfx == "" || os.Getenv("MPSA_VICI_CAPTURE") != "") {
				capture = startCapture(t, ctl.SocketPath())
				capture.suffix = sfx
			}
			var members []*charon.Instance
			for i, m := range lab.Members {
				members = append(members, charon.Start(t, m.NS, charon.Config{SwanctlConf: g.MemberConf(i)}))
			}
			controls := waitControls(t, w, g, 2)

			for i, m := range lab.Members {
				c, ok := w.Snapshot().FindControl(g.ConnName(), g.ChildName(), m.Peer.Control)
				if !ok {
					t.Fatalf("FindControl(%v) found nothing; controls: %+v", m.Peer.Control, controls)
				}
				ike, child := c.IKE, c.Child
				if ike.RemoteHost != m.Peer.Underlay || ike.LocalHost != g.Controller.Underlay {
					t.Errorf("member %d: IKE hosts %v..%v, want %v..%v", i, ike.LocalHost, ike.RemoteHost, g.Controller.Underlay, m.Peer.Underlay)
				}
				if ike.RemoteID != m.Peer.ID || ike.LocalID != g.Controller.ID {
					t.Errorf("member %d: ids %q..%q", i, ike.LocalID, ike.RemoteID)
				}
				if ike.Initiator || ike.Version != 2 || ike.InitiatorSPI == 0 || ike.ResponderSPI == 0 {
					t.Errorf("member %d: IKE SA %+v: want responder, IKEv2, both SPIs set", i, ike)
				}
				if c.Local != g.Controller.Control || c.Remote != m.Peer.Control {
					t.Errorf("member %d: control addresses %v..%v, want %v..%v", i, c.Local, c.Remote, g.Controller.Control, m.Peer.Control)
				}
				if child.Mode != "TUNNEL" || child.Protocol != "ESP" || !child.Encap || child.SPIIn == 0 || child.SPIOut == 0 {
					t.Errorf("member %d: child %+v: want ESP tunnel in UDP with SPIs", i, child)
				}

				// The member's own view must agree (the responder
				// installs the child before the initiator has read the
				// IKE_AUTH response, so wait for the member).
				mc := memberControl(t, members[i].SocketPath(), g)
				if !mc.IKE.Initiator || !mc.IKE.MatchSPIs(ike.InitiatorSPI, ike.ResponderSPI) {
					t.Errorf("member %d: IKE SPIs %016x_i %016x_r (initiator=%v), controller has %016x_i %016x_r",
						i, mc.IKE.InitiatorSPI, mc.IKE.ResponderSPI, mc.IKE.Initiator, ike.InitiatorSPI, ike.ResponderSPI)
				}
				if mc.Child.SPIIn != child.SPIOut || mc.Child.SPIOut != child.SPIIn {
					t.Errorf("member %d: child SPIs in %08x out %08x, controller in %08x out %08x",
						i, mc.Child.SPIIn, mc.Child.SPIOut, child.SPIIn, child.SPIOut)
				}
				if mc.Local != m.Peer.Control || mc.Remote != g.Controller.Control {
					t.Errorf("member %d: its control addresses %v..%v", i, mc.Local, mc.Remote)
				}
				if capture != nil && i == 0 {
					capture.listSA(t, "list-sa-member"+capture.suffix+".json", members[i].SocketPath())
				}
			}

			// Updates: the first one is the resync of an empty charon,
			// then events only.
			ups := rec.all()
			if len(ups) == 0 {
				t.Fatal("no update, want a resync with no SA first")
			}
			if ups[0].Cause != vici.CauseResync || len(ups[0].Snapshot.IKESAs) != 0 {
				t.Errorf("first update %+v, want a resync with no SA", ups[0])
			}
			var kinds []string
			for _, u := range ups[1:] {
				if u.Cause == vici.CauseEvent {
					kinds = append(kinds, u.Event.Kind.String())
				}
			}
			for _, want := range []string{"ike-up", "child-up"} {
				if n := countOf(kinds, want); n != 2 {
					t.Errorf("saw %d %s events, want 2 (events: %v)", n, want, kinds)
				}
			}

			// Datagrams through the control child.
			l := charon.ListenUDP(t, lab.Controller.NS, netip.AddrPortFrom(g.Controller.Control, controlPort))
			for i, m := range lab.Members {
				src, ifname := controlDatagram(t, l, g.Controller.Control, m.NS, m.Peer.Control)
				t.Logf("member %d, socket bound to %v: datagram arrived from %v on %s", i, m.Peer.Control, src, ifname)
				if src.Addr() != m.Peer.Control || ifname != "ipsec0" {
					t.Errorf("member %d: datagram from %v on %s, want from %v on ipsec0", i, src, ifname, m.Peer.Control)
				}
				if _, ok := w.Snapshot().FindControl(g.ConnName(), g.ChildName(), src.Addr()); !ok {
					t.Errorf("member %d: FindControl(source %v) found nothing", i, src.Addr())
				}
				src, ifname = controlDatagram(t, l, g.Controller.Control, m.NS, netip.Addr{})
				t.Logf("member %d, unbound socket: datagram arrived from %v on %s", i, src, ifname)
				if src.Addr() != m.Peer.Control || ifname != "ipsec0" {
					t.Errorf("member %d: unbound datagram from %v on %s, want from %v on ipsec0", i, src, ifname, m.Peer.Control)
				}
			}
			if capture != nil {
				capture.listSA(t, "list-sa-controller"+capture.suffix+".json", ctl.SocketPath())
			}
		})
	}
}

// memberControl polls a member's charon until it reports exactly one
// control child, and returns it.
func memberControl(t *testing.T, socket string, g charon.Group) vici.Control {
	t.Helper()
	var c []vici.Control
	testenv.WaitFor(t, patience, "one control child at member "+socket, func() (bool, string) {
		sas := listSAs(t, socket)
		c = (vici.Snapshot{IKESAs: sas}).Controls(g.ConnName(), g.ChildName())
		return len(c) == 1, fmt.Sprintf("%d control children: %+v", len(c), sas)
	})
	return c[0]
}

func countOf(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// TestEventsRekeyAndRestart: terminating a member's IKE SA yields the down
// events and a state without it that a fresh list-sas confirms; a child
// rekey yields a resync with new SPIs; restarting charon under the watcher
// yields a disconnect, a reconnect and a resync.
func TestEventsRekeyAndRestart(t *testing.T) {
	lab := charon.NewLab(t, charon.LabOptions{Members: 2})
	g := lab.Group
	ctl, members := lab.StartCharons(t)
	w, rec := startWatcher(t, ctl.SocketPath())
	startCapture(t, ctl.SocketPath())
	controls := waitControls(t, w, g, 2)
	gone := lab.Members[0].Peer
	var goneIKE vici.IKESA
	for _, c := range controls {
		if c.Remote == gone.Control {
			goneIKE = c.IKE
		}
	}

	// 1. A member leaves.
	seq := w.Last().Seq
	members[0].MustSwanctl(t, "--terminate", "--ike", g.ConnName())
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	u, err := w.WaitUpdate(ctx, seq, func(u vici.Update) bool {
		return len(u.Snapshot.Controls(g.ConnName(), g.ChildName())) == 1
	})
	if err != nil {
		t.Fatalf("member 0 still present after terminate: %v", err)
	}
	if _, ok := u.Snapshot.IKE(goneIKE.UniqueID); ok {
		t.Errorf("IKE SA %d of the departed member still in the snapshot", goneIKE.UniqueID)
	}
	var sawIKEDown, sawChildDown bool
	for _, u := range rec.all() {
		if u.Seq <= seq || u.Cause != vici.CauseEvent {
			continue
		}
		switch {
		case u.Event.Kind == vici.IKEDown && u.Event.IKE.UniqueID == goneIKE.UniqueID:
			sawIKEDown = true
			if u.Event.IKE.RemoteID != gone.ID || u.Event.IKE.State != vici.IKEDeleting {
				t.Errorf("down event for %q in state %s, want %q DELETING", u.Event.IKE.RemoteID, u.Event.IKE.State, gone.ID)
			}
		case u.Event.Kind == vici.ChildDown && u.Event.IKE.UniqueID == goneIKE.UniqueID:
			sawChildDown = true
		}
	}
	if !sawIKEDown || !sawChildDown {
		t.Errorf("ike-down seen: %v, child-down seen: %v; want both", sawIKEDown, sawChildDown)
	}
	// The event-patched state equals a fresh full listing.
	waitSameState(t, w, ctl.SocketPath())

	// 2. The remaining member rekeys its control child: the watcher
	// resynchronises and reports the new SPIs.
	before, _ := w.Snapshot().FindControl(g.ConnName(), g.ChildName(), lab.Members[1].Peer.Control)
	seq = w.Last().Seq
	members[1].MustSwanctl(t, "--rekey", "--child", g.ChildName())
	u, err = w.WaitUpdate(ctx, seq, func(u vici.Update) bool {
		c, ok := u.Snapshot.FindControl(g.ConnName(), g.ChildName(), lab.Members[1].Peer.Control)
		return ok && c.Child.SPIIn != before.Child.SPIIn && len(u.Snapshot.IKESAs[0].Children) == 1
	})
	if err != nil {
		t.Fatalf("no rekeyed control child: %v; snapshot %+v", err, u.Snapshot)
	}
	after, _ := u.Snapshot.FindControl(g.ConnName(), g.ChildName(), lab.Members[1].Peer.Control)
	t.Logf("child rekey: SPIs %08x/%08x -> %08x/%08x (update cause %v)", before.Child.SPIIn, before.Child.SPIOut, after.Child.SPIIn, after.Child.SPIOut, u.Cause)
	waitSameState(t, w, ctl.SocketPath())

	// 3. And its IKE SA: new unique id and SPIs, control child moved over.
	seq = w.Last().Seq
	members[1].MustSwanctl(t, "--rekey", "--ike", g.ConnName())
	u, err = w.WaitUpdate(ctx, seq, func(u vici.Update) bool {
		c, ok := u.Snapshot.FindControl(g.ConnName(), g.ChildName(), lab.Members[1].Peer.Control)
		return ok && c.IKE.UniqueID != after.IKE.UniqueID && len(u.Snapshot.IKESAs) == 1
	})
	if err != nil {
		t.Fatalf("no rekeyed IKE SA: %v; snapshot %+v", err, u.Snapshot)
	}
	waitSameState(t, w, ctl.SocketPath())

	// 4. charon restarts under the watcher.
	seq = w.Last().Seq
	if err := ctl.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitUpdate(ctx, seq, func(u vici.Update) bool {
		return u.Cause == vici.CauseResync || u.Cause == vici.CauseDisconnected
	}); err != nil {
		t.Fatal(err)
	}
	// The member's old IKE SA is gone with the old charon; it initiates
	// again and the watcher, reconnected, sees it.
	members[1].MustSwanctl(t, "--initiate", "--child", g.ChildName())
	c := waitControls(t, w, g, 1)
	if c[0].Remote != lab.Members[1].Peer.Control {
		t.Errorf("after restart: control child to %v, want %v", c[0].Remote, lab.Members[1].Peer.Control)
	}
	var sawDisc, sawResyncAfter bool
	for _, u := range rec.all() {
		if u.Seq <= seq {
			continue
		}
		if u.Cause == vici.CauseDisconnected {
			sawDisc = true
			if u.Snapshot.Connected || len(u.Snapshot.IKESAs) != 0 {
				t.Errorf("disconnected update with snapshot %+v", u.Snapshot)
			}
		}
		if sawDisc && u.Cause == vici.CauseResync {
			sawResyncAfter = true
		}
	}
	if !sawDisc || !sawResyncAfter {
		t.Errorf("after restart: disconnect seen %v, resync after it %v; want both", sawDisc, sawResyncAfter)
	}
	waitSameState(t, w, ctl.SocketPath())
}

// TestWatcherBeforeCharon: a watcher started before charon exists keeps
// retrying, connects when charon comes up and sees the SAs.
func TestWatcherBeforeCharon(t *testing.T) {
	lab := charon.NewLab(t, charon.LabOptions{Members: 1})
	g := lab.Group
	dir, err := os.MkdirTemp("", "mpsa-vici-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	w, rec := startWatcher(t, filepath.Join(dir, "charon.vici"))
	time.Sleep(300 * time.Millisecond) // let it fail a few times first
	if n := len(rec.all()); n != 0 {
		t.Fatalf("%d updates before charon exists", n)
	}
	charon.Start(t, lab.Controller.NS, charon.Config{Dir: dir, SwanctlConf: g.ControllerConf()})
	charon.Start(t, lab.Members[0].NS, charon.Config{SwanctlConf: g.MemberConf(0)})
	c := waitControls(t, w, g, 1)
	if c[0].Remote != lab.Members[0].Peer.Control {
		t.Errorf("control child to %v, want %v", c[0].Remote, lab.Members[0].Peer.Control)
	}
}

// waitSameState waits until the watcher's state equals a fresh list-sas
// (ignoring the established age, which changes with time): charon deletes
// rekeyed SAs a moment after the rekey event, which the watcher applies at
// once.
func waitSameState(t *testing.T, w *vici.Watcher, socket string) {
	t.Helper()
	norm := func(sas []vici.IKESA) string {
		var b strings.Builder
		for _, sa := range sas {
			sa.Established = 0
			fmt.Fprintf(&b, "%+v\n", sa)
		}
		return b.String()
	}
	start := time.Now()
	testenv.WaitFor(t, patience, "the watcher's state to equal list-sas", func() (bool, string) {
		a, b := norm(w.Snapshot().IKESAs), norm(listSAs(t, socket))
		return a == b, fmt.Sprintf("watcher:\n%s\nlist-sas:\n%s", a, b)
	})
	t.Logf("watcher state equals list-sas after %v", time.Since(start).Round(time.Millisecond))
}

// controlDatagram sends UDP datagrams from the member namespace (bound to
// from if valid) to the controller's control address and port until one
// arrives, and returns its source and the interface it arrived on.
func controlDatagram(t *testing.T, l *charon.UDPListener, ctlAddr netip.Addr, memberNS *nettest.NS, from netip.Addr) (netip.AddrPort, string) {
	t.Helper()
	to := netip.AddrPortFrom(ctlAddr, controlPort)
	s := charon.DialUDP(t, memberNS, from, to)
	d, err := charon.Exchange(s, l, []byte("mpsa control test"), patience)
	if err != nil {
		t.Fatalf("to %v: %v", to, err)
	}
	return d.Src, d.IfName
}

// rawCapture records raw VICI messages from real charon; with
// MPSA_VICI_CAPTURE=DIR it writes them to DIR, from where they can be
// copied to testdata/ for the parser tests.
type rawCapture struct {
	mu     sync.Mutex
	files  map[string][]byte
	events chan govici.Event
	s      *vici.Client
	suffix string // added to file names
}

func startCapture(t *testing.T, socket string) *rawCapture {
	t.Helper()
	s, err := vici.Dial(t.Context(), socket)
	if err != nil {
		t.Fatal(err)
	}
	rc := &rawCapture{files: map[string][]byte{}, events: make(chan govici.Event, 1024), s: s}
	s.NotifyEvents(rc.events)
	if err := s.Subscribe(vici.EventIKEUpdown, vici.EventChildUpdown, vici.EventIKERekey, vici.EventChildRekey); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rc.save(t)
		s.Close()
	})
	return rc
}

func (rc *rawCapture) listSA(t *testing.T, name, socket string) {
	t.Helper()
	if os.Getenv("MPSA_VICI_CAPTURE") == "" {
		return
	}
	c, err := vici.Dial(t.Context(), socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msgs, err := c.ListSAsRaw(t.Context())
	if err != nil || len(msgs) == 0 {
		t.Fatalf("list-sas: %d messages, %v", len(msgs), err)
	}
	rc.put(t, name, msgs[0]) // the first IKE SA
}

func (rc *rawCapture) put(t *testing.T, name string, m *govici.Message) {
	t.Helper()
	data, err := vici.MessageJSON(m)
	if err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if _, dup := rc.files[name]; !dup {
		rc.files[name] = data
	}
}

// save names each captured event by type and direction (first of each)
// and writes every capture when MPSA_VICI_CAPTURE is set.
func (rc *rawCapture) save(t *testing.T) {
	t.Helper()
	if os.Getenv("MPSA_VICI_CAPTURE") == "" {
		return
	}
drain:
	for {
		select {
		case ev, ok := <-rc.events:
			if !ok {
				break drain // the session ended with charon
			}
			dir := "down"
			if ev.Message.Get("up") == "yes" {
				dir = "up"
			}
			if strings.HasSuffix(ev.Name, "rekey") {
				dir = "controller"
			}
			rc.put(t, ev.Name+"-"+dir+rc.suffix+".json", ev.Message)
		default:
			break drain
		}
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for name, data := range rc.files {
		p := filepath.Join(os.Getenv("MPSA_VICI_CAPTURE"), name)
		if err := os.WriteFile(p, append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("captured %s", p)
	}
}

// TestWatcherDroppedEvents makes govici drop events and checks that the
// watcher recovers: the watcher is held in OnUpdate at its first update
// after the members start, while charon sends the events of three members
// coming up; govici keeps only EventBuffer of them for the watcher and
// drops the rest (a second session with a large channel counts what charon
// sent). Once released, the watcher finds its channel full, resynchronises,
// and ends with charon's true state.
func TestWatcherDroppedEvents(t *testing.T) {
	const buffer = 2
	lab := charon.NewLab(t, charon.LabOptions{Members: 3})
	g := lab.Group
	ctl := charon.Start(t, lab.Controller.NS, charon.Config{SwanctlConf: g.ControllerConf()})
	rec := &recorder{}
	var hold atomic.Bool
	held := make(chan uint64, 1) // the Seq of the update the watcher is held at
	release := make(chan struct{})
	var releaseOnce sync.Once
	unhold := func() { releaseOnce.Do(func() { close(release) }) }
	w := vici.NewWatcher(vici.WatcherOptions{
		Socket:      ctl.SocketPath(),
		EventBuffer: buffer,
		OnUpdate: func(u vici.Update) {
			rec.add(u)
			if hold.CompareAndSwap(true, false) {
				held <- u.Seq
				<-release
			}
		},
		Logger: testLogger(t),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	t.Cleanup(unhold) // runs first: a failed test must not leave Run held
	if _, err := w.Wait(t.Context(), func(s vici.Snapshot) bool { return s.Connected }); err != nil {
		t.Fatal(err)
	}

	// A second session counts the events charon sends.
	counter, err := vici.Dial(t.Context(), ctl.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer counter.Close()
	sent := make(chan govici.Event, 1024)
	counter.NotifyEvents(sent)
	if err := counter.Subscribe(vici.EventIKEUpdown, vici.EventChildUpdown, vici.EventIKERekey, vici.EventChildRekey); err != nil {
		t.Fatal(err)
	}

	hold.Store(true)
	for i, m := range lab.Members {
		charon.Start(t, m.NS, charon.Config{SwanctlConf: g.MemberConf(i)})
	}
	var heldAt uint64
	select {
	case heldAt = <-held:
	case <-time.After(patience):
		t.Fatal("the watcher delivered no update after the members started")
	}
	// Every member sends at least ike-up and child-up; wait for all of
	// them while the watcher is held.
	want := 2 * len(lab.Members)
	nsent := 0
	for deadline := time.After(patience); nsent < want; {
		select {
		case <-sent:
			nsent++
		case <-deadline:
			t.Fatalf("charon sent %d events, want %d", nsent, want)
		}
	}
	if nsent <= buffer+1 {
		t.Fatalf("only %d events while the watcher was held: nothing to drop", nsent)
	}
	unhold()

	waitControls(t, w, g, 3)
	waitSameState(t, w, ctl.SocketPath())
	applied, resyncs := 0, 0
	for _, u := range rec.all() {
		switch {
		case u.Seq < heldAt:
		case u.Cause == vici.CauseEvent:
			applied++
		case u.Cause == vici.CauseResync && u.Seq > heldAt:
			resyncs++
		}
	}
	t.Logf("charon sent %d events while the watcher was held at update %d; the watcher applied %d and resynchronised %d times", nsent, heldAt, applied, resyncs)
	if applied >= nsent {
		t.Errorf("the watcher applied %d of %d events: none was dropped", applied, nsent)
	}
	if resyncs == 0 {
		t.Error("no resync after events were dropped")
	}
}

// failures keeps the CHILD_SA failures a watcher reported.
type failures struct {
	mu  sync.Mutex
	evs []vici.LogEvent
}

func (f *failures) add(e vici.LogEvent) {
	f.mu.Lock()
	f.evs = append(f.evs, e)
	f.mu.Unlock()
}

func (f *failures) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, e := range f.evs {
		fmt.Fprintf(&b, "%s[%d] %s\n", e.IKEName, e.IKEUniqueID, e)
	}
	return b.String()
}

// TestChildFailureSaysWhy reproduces the control child that cannot be
// installed on a fresh Debian without libstrongswan-standard-plugins: the
// controller's charon, with kernel-libipsec but without the gcm and
// openssl plugins, negotiates charon's default ESP proposal (AES-GCM first)
// and cannot install it. The watchers tell why on both sides: charon's
// plugins and algorithms (Update.Charon, and ESPProblems naming AES_GCM_16
// on the controller only), the IKE SA up without its control child, and
// charon's own words for the failure from its log (OnChildFailure).
func TestChildFailureSaysWhy(t *testing.T) {
	lab := charon.NewLab(t, charon.LabOptions{Members: 1})
	g := lab.Group
	ctl := charon.Start(t, lab.Controller.NS, charon.Config{SwanctlConf: g.ControllerConf(), OmitPlugins: []string{"gcm", "openssl"}})
	var ctlFail, memFail failures
	wc := vici.NewWatcher(vici.WatcherOptions{Socket: ctl.SocketPath(), Logger: testLogger(t), OnChildFailure: ctlFail.add})
	wc.FollowLog(true)
	// A watcher that is not asked to follow charon's log hears nothing
	// of it (charon pays for every log line a subscriber gets).
	var quietFail failures
	wq := vici.NewWatcher(vici.WatcherOptions{Socket: ctl.SocketPath(), Logger: testLogger(t), OnChildFailure: quietFail.add})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Go(func() { wc.Run(ctx) })
	var wm *vici.Watcher
	mem := charon.Start(t, lab.Members[0].NS, charon.Config{})
	wm = vici.NewWatcher(vici.WatcherOptions{Socket: mem.SocketPath(), Logger: testLogger(t), OnChildFailure: memFail.add})
	wm.FollowLog(true)
	wg.Go(func() { wm.Run(ctx) })
	wg.Go(func() { wq.Run(ctx) })
	// Load the member's connection once both watchers follow charon's
	// log, so that no message of the attempt is missed.
	for _, w := range []*vici.Watcher{wc, wm, wq} {
		wctx, wcancel := context.WithTimeout(ctx, patience)
		_, err := w.WaitUpdate(wctx, 0, func(u vici.Update) bool { return u.Charon != nil })
		wcancel()
		if err != nil {
			t.Fatalf("no update with charon's plugins: %v", err)
		}
	}
	if err := mem.WriteSwanctlConf(g.MemberConf(0)); err != nil {
		t.Fatal(err)
	}
	mem.MustSwanctl(t, "--load-all")

	ci, mi := wc.Last().Charon, wm.Last().Charon
	if !ci.HasPlugin("kernel-libipsec") || ci.HasPlugin("gcm") || ci.HasAlgorithm("aead", "AES_GCM_16") || !ci.HasAlgorithm("encryption", "AES_CBC") {
		t.Errorf("controller's charon: plugins %v, aead %v, encryption %v; want kernel-libipsec, no gcm, no AES_GCM_16, AES_CBC",
			ci.Plugins, ci.Algorithms["aead"], ci.Algorithms["encryption"])
	}
	if p := ci.ESPProblems(nil); len(p) != 1 || !strings.Contains(p[0], "AES_GCM_16") || !strings.Contains(p[0], "libstrongswan-standard-plugins") {
		t.Errorf("controller: ESPProblems(default proposal) = %q, want one naming AES_GCM_16 and the package", p)
	}
	if p := ci.ESPProblems([]string{"aes256-sha256"}); len(p) != 0 {
		t.Errorf("controller: ESPProblems(aes256-sha256) = %q, want none (aes and hmac are loaded)", p)
	}
	if p := mi.ESPProblems(nil); len(p) != 0 || !mi.HasAlgorithm("aead", "AES_GCM_16") {
		t.Errorf("member (all plugins): ESPProblems = %q, AES_GCM_16 present %v; want none, true", p, mi.HasAlgorithm("aead", "AES_GCM_16"))
	}

	// The member's IKE SA comes up, its control child does not.
	wctx, wcancel := context.WithTimeout(ctx, patience)
	s, err := wm.Wait(wctx, func(s vici.Snapshot) bool {
		for _, sa := range s.IKESAs {
			if sa.Conn == g.ConnName() && sa.State == vici.IKEEstablished {
				return true
			}
		}
		return false
	})
	wcancel()
	if err != nil {
		t.Fatalf("member's IKE SA not established: %v", err)
	}
	if cs := s.Controls(g.ConnName(), g.ChildName()); len(cs) != 0 {
		t.Fatalf("the control child came up although the controller cannot install AES-GCM: %+v", cs)
	}
	// charon's words for it reach both watchers, tied to the IKE SA.
	has := func(f *failures, words ...string) (bool, string) {
		st := f.String()
		for _, w := range words {
			if strings.Contains(st, w) {
				return strings.Contains(st, g.ConnName()+"["), st
			}
		}
		return false, st
	}
	testenv.WaitFor(t, patience, "the controller's charon to log why the child failed", func() (bool, string) {
		return has(&ctlFail, "unsupported AEAD algorithm AES_GCM_16", "failed to establish CHILD_SA", "unable to install")
	})
	testenv.WaitFor(t, patience, "the member's charon to log the controller's refusal", func() (bool, string) {
		return has(&memFail, "NO_PROPOSAL_CHOSEN", "no CHILD_SA built")
	})
	t.Logf("controller's charon:\n%smember's charon:\n%s", ctlFail.String(), memFail.String())
	if q := quietFail.String(); q != "" {
		t.Errorf("a watcher not following charon's log got:\n%s", q)
	}

	// Asked again (what a member does while its control child is
	// missing), charon accepts at once and tries: its refusal comes
	// again in the log.
	before := strings.Count(memFail.String(), "NO_PROPOSAL_CHOSEN")
	c, err := vici.Dial(ctx, mem.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
	err = c.InitiateChild(ictx, g.ConnName(), g.ChildName())
	icancel()
	if err != nil {
		t.Fatalf("InitiateChild: %v", err)
	}
	testenv.WaitFor(t, patience, "the member's charon to try the child again", func() (bool, string) {
		n := strings.Count(memFail.String(), "NO_PROPOSAL_CHOSEN")
		return n > before, fmt.Sprintf("%d NO_PROPOSAL_CHOSEN before, %d now", before, n)
	})
}
