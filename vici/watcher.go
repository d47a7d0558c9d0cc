package vici

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	govici "github.com/strongswan/govici/vici"
)

// Cause says why an Update was delivered.
type Cause int

// Update causes.
const (
	// CauseResync: a full list-sas replaced the state (after every
	// connect and reconnect, after rekey events, when events may have
	// been dropped, and periodically).
	CauseResync Cause = iota + 1
	// CauseEvent: an ike-updown or child-updown event changed the state.
	CauseEvent
	// CauseDisconnected: the VICI session ended (charon stopped or
	// restarted); the snapshot is empty until the next resync.
	CauseDisconnected
)

// String names the cause.
func (c Cause) String() string {
	switch c {
	case CauseResync:
		return "resync"
	case CauseEvent:
		return "event"
	case CauseDisconnected:
		return "disconnected"
	}
	return "cause(?)"
}

// Update is one state change delivered by the Watcher.
type Update struct {
	// Cause says why it was delivered.
	Cause Cause
	// Event is the event applied, for CauseEvent.
	Event *Event
	// Snapshot is the whole state after the change. The caller may keep
	// it: the watcher never modifies a delivered snapshot. With
	// WatcherOptions.OmitSnapshots, OnUpdate gets it without IKESAs (only
	// Connected is set); Last and WaitUpdate still return it whole.
	Snapshot Snapshot
	// Changed are the IKE SAs the update stored, in no particular order:
	// for CauseEvent the one the event touched (none for a down event),
	// for CauseResync every IKE SA, since the whole state was replaced.
	// Removed are the unique ids of the IKE SAs a CauseEvent removed.
	// With them a consumer follows the state in time proportional to
	// what changed. They share memory with the state: do not modify.
	Changed []IKESA
	Removed []uint32
	// Seq counts updates from 1.
	Seq uint64
	// Charon is what charon said of itself (version, plugins,
	// algorithms) in the current VICI session: asked when it began and,
	// while charon has not answered, again at each periodic resync (the
	// update of that resync carries the answer); nil while disconnected
	// or until charon answers. Never modified.
	Charon *Charon
}

// WatcherOptions configure a Watcher.
type WatcherOptions struct {
	// Socket is charon's VICI socket path; DefaultSocket if empty.
	Socket string
	// Backoff spaces reconnection attempts.
	Backoff Backoff
	// ResyncInterval is the period of a full list-sas even without
	// events; 0 means 60 s, negative disables it.
	ResyncInterval time.Duration
	// RekeySettle is how long after a rekey event the watcher lists the
	// SAs again: charon keeps a rekeyed CHILD SA listed for
	// charon.delete_rekeyed_delay (5 s by default) and removes it without
	// an event, so a resync in that window would bring it back until the
	// next one. 0 means 10 s; negative disables it.
	RekeySettle time.Duration
	// EventBuffer is the capacity of the event channel handed to govici
	// (which drops events when it is full); 0 means 1024.
	EventBuffer int
	// OnUpdate, if set, is called with every update, in order, from the
	// goroutine running Run. It must not block for long.
	OnUpdate func(Update)
	// OnChildFailure, if set, receives charon's log messages that say
	// why a CHILD_SA failed, was not installed or went down
	// (LogEvent.ChildFailure), from a VICI session of their own
	// subscribed to charon's log event, so that a burst of log
	// messages never costs an SA event. It is called from that
	// session's goroutine and must not block; messages are dropped
	// when charon logs faster than they are read.
	//
	// The session runs only while FollowLog(true) is in force: charon
	// formats and sends every log message of level 1 to a subscriber,
	// which at a thousand IKE SAs coming up costs charon about as much
	// CPU again as the IKE work itself, so the consumer asks for it only
	// while it has something to explain.
	OnChildFailure func(LogEvent)
	// OmitSnapshots hands OnUpdate updates without the snapshot's IKE
	// SAs, for a consumer that follows Changed and Removed: the watcher
	// then does not copy and sort every IKE SA at every event. Snapshot,
	// Last, Wait and WaitUpdate build the snapshot when they are called.
	OmitSnapshots bool
	// Logger; slog.Default() if nil.
	Logger *slog.Logger
}

// Watcher follows charon's SAs over VICI across charon restarts.
type Watcher struct {
	o   WatcherOptions
	log *slog.Logger

	// logWanted is FollowLog's setting; logChanged wakes the session's
	// log follower when it changes.
	logWanted  atomic.Bool
	logChanged chan struct{}

	mu   sync.Mutex
	last Update
	// st is the state, changed by Run's goroutine under mu (see change),
	// so that Snapshot can build a snapshot of it with OmitSnapshots.
	st      state
	changed chan struct{} // closed and replaced at every update
}

// NewWatcher returns a watcher; nothing happens until Run.
func NewWatcher(o WatcherOptions) *Watcher {
	if o.Socket == "" {
		o.Socket = DefaultSocket()
	}
	if o.ResyncInterval == 0 {
		o.ResyncInterval = 60 * time.Second
	}
	if o.RekeySettle == 0 {
		o.RekeySettle = 10 * time.Second
	}
	if o.EventBuffer <= 0 {
		o.EventBuffer = 1024
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Watcher{
		o:          o,
		log:        log.With("vici", o.Socket),
		last:       Update{Cause: CauseDisconnected},
		st:         state{},
		changed:    make(chan struct{}),
		logChanged: make(chan struct{}, 1),
	}
}

// Snapshot returns the latest state.
func (w *Watcher) Snapshot() Snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastLocked().Snapshot
}

// Last returns the latest update (Seq 0 before the first).
func (w *Watcher) Last() Update {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastLocked()
}

// lastLocked returns the latest update with its whole snapshot, which it
// builds from the state when the update was published without one
// (OmitSnapshots). w.mu is held.
func (w *Watcher) lastLocked() Update {
	if s := &w.last.Snapshot; s.Connected && s.IKESAs == nil {
		*s = w.st.snapshot()
	}
	return w.last
}

// Wait blocks until cond holds for the latest snapshot (checked now and
// after every update) or ctx is done, and returns that snapshot.
func (w *Watcher) Wait(ctx context.Context, cond func(Snapshot) bool) (Snapshot, error) {
	u, err := w.wait(ctx, func(u Update) bool { return cond(u.Snapshot) })
	return u.Snapshot, err
}

// WaitUpdate blocks until an update with Seq > after satisfies cond, or ctx
// is done. Use Last().Seq as after to wait for something that has not
// happened yet.
func (w *Watcher) WaitUpdate(ctx context.Context, after uint64, cond func(Update) bool) (Update, error) {
	// Updates are not queued: a condition that holds only between two
	// updates in quick succession can be missed, so cond should describe
	// a state (or the latest update's cause), not a transient.
	return w.wait(ctx, func(u Update) bool { return u.Seq > after && cond(u) })
}

// wait blocks until ok holds for the latest update (checked now and after
// every update) or ctx is done, and returns that update.
func (w *Watcher) wait(ctx context.Context, ok func(Update) bool) (Update, error) {
	for {
		w.mu.Lock()
		u, ch := w.lastLocked(), w.changed
		w.mu.Unlock()
		if ok(u) {
			return u, nil
		}
		select {
		case <-ctx.Done():
			return u, ctx.Err()
		case <-ch:
		}
	}
}

// change applies fn to the state and publishes the update it returns,
// if it reports one: under the lock, so that Snapshot sees the state
// together with its update's Seq. The update's snapshot is built here
// unless OmitSnapshots defers that to whoever asks for it.
func (w *Watcher) change(fn func(st state) (Update, bool)) {
	w.mu.Lock()
	u, ok := fn(w.st)
	if !ok {
		w.mu.Unlock()
		return
	}
	u.Seq = w.last.Seq + 1
	if u.Cause != CauseDisconnected {
		u.Snapshot = Snapshot{Connected: true}
		if !w.o.OmitSnapshots {
			u.Snapshot = w.st.snapshot()
		}
	}
	w.last = u
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
	if w.o.OnUpdate != nil {
		w.o.OnUpdate(u)
	}
}

// Run connects (retrying with backoff), resynchronises, follows events and
// reconnects whenever the session ends, until ctx is done; it then returns
// ctx's error.
//
// A session that ends before its first resync (charon accepts connections
// but fails them) is retried with the same backoff as the connection.
func (w *Watcher) Run(ctx context.Context) error {
	b := w.o.Backoff.withDefaults()
	var delay time.Duration
	for {
		seq := w.lastSeen().Seq
		err := w.connected(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.log.Warn("VICI session ended, reconnecting", "err", err)
		if last := w.lastSeen(); last.Seq > seq && last.Cause != CauseDisconnected {
			delay = 0 // it worked for a while
		} else {
			delay = b.next(delay)
		}
		w.change(func(st state) (Update, bool) {
			if !w.last.Snapshot.Connected {
				return Update{}, false
			}
			clear(st) // empty until the next resync
			return Update{Cause: CauseDisconnected}, true
		})
		if delay > 0 {
			t := time.NewTimer(jitter(delay))
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	}
}

// lastSeen is the latest update without building its snapshot.
func (w *Watcher) lastSeen() Update {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// state is the watcher's working copy, keyed by IKE SA unique id. A
// Children slice stored in it is never modified afterwards (apply builds a
// new one for every change), so snapshots share them with the state
// instead of copying every IKE SA's children at every event.
type state map[uint32]IKESA

func (st state) snapshot() Snapshot {
	s := Snapshot{Connected: true, IKESAs: make([]IKESA, 0, len(st))}
	for _, id := range slices.Sorted(maps.Keys(st)) {
		s.IKESAs = append(s.IKESAs, st[id])
	}
	return s
}

// delta is what apply(ev), applied, changed: the IKE SAs it stored and
// the unique ids it removed.
func (st state) delta(ev Event) (changed []IKESA, removed []uint32) {
	id := ev.IKE.UniqueID
	switch ev.Kind {
	case IKEDown:
		return nil, []uint32{id}
	case IKERekey:
		removed = []uint32{ev.OldIKE.UniqueID}
	}
	if sa, ok := st[id]; ok {
		changed = []IKESA{sa}
	}
	return changed, removed
}

// apply patches the state with an event; it reports false for events it
// cannot apply, which call for a resync.
//
// A rekey replaces the old SA by the new one at once: charon deletes the
// rekeyed SA shortly after, without an event.
func (st state) apply(ev Event) bool {
	id := ev.IKE.UniqueID
	switch ev.Kind {
	case IKERekey:
		sa := ev.IKE
		old, ok := st[ev.OldIKE.UniqueID]
		if !ok {
			return false
		}
		if len(sa.Children) == 0 {
			sa.Children = old.Children
		}
		delete(st, ev.OldIKE.UniqueID)
		st[id] = sa
	case ChildRekey:
		old, ok := st[id]
		if !ok {
			return false
		}
		sa := ev.IKE
		kids := slices.DeleteFunc(slices.Clone(old.Children), func(c ChildSA) bool {
			return c.UniqueID == ev.OldChild.UniqueID || c.UniqueID == ev.IKE.Children[0].UniqueID
		})
		kids = append(kids, ev.IKE.Children[0])
		sortChildren(kids)
		sa.Children = kids
		st[id] = sa
	case IKEUp:
		sa := ev.IKE
		if old, ok := st[id]; ok && len(sa.Children) == 0 {
			sa.Children = old.Children
		}
		st[id] = sa
	case IKEDown:
		delete(st, id)
	case ChildUp, ChildDown:
		child := ev.IKE.Children[0]
		sa := ev.IKE
		var kids []ChildSA
		if old, ok := st[id]; ok {
			kids = old.Children
		}
		kids = slices.DeleteFunc(slices.Clone(kids), func(c ChildSA) bool { return c.UniqueID == child.UniqueID })
		if ev.Kind == ChildUp {
			kids = append(kids, child)
			sortChildren(kids)
		}
		sa.Children = kids
		if ev.Kind == ChildDown && sa.State != IKEEstablished {
			// The IKE SA is going away; ike-updown follows.
			if _, ok := st[id]; !ok {
				return true
			}
		}
		st[id] = sa
	default:
		return false
	}
	return true
}

// connected opens two sessions, one for events and one for list-sas
// (whose list-sa events charon sends only to the session that asked), and
// follows them until either ends or ctx is done.
func (w *Watcher) connected(ctx context.Context) error {
	ec, err := DialRetry(ctx, w.o.Socket, w.o.Backoff, w.log)
	if err != nil {
		return err
	}
	defer ec.Close()
	c, err := DialRetry(ctx, w.o.Socket, w.o.Backoff, w.log)
	if err != nil {
		return err
	}
	defer c.Close()
	w.log.Info("connected to charon")
	// What charon is and has: read once per session, handed out with
	// every update of it; asked again at each periodic resync while
	// charon has not answered (a consumer refuses what it cannot tell
	// without it).
	info, err := w.askCharon(ctx, c)
	if err != nil {
		w.log.Warn("charon did not say which plugins and algorithms it has; asking again at each resync", "err", err)
	}
	if w.o.OnChildFailure != nil {
		// Wanted now, the log session is open before the first
		// update goes out, so that nothing charon says after it is
		// missed; later changes are followed in the background.
		var first func()
		if w.logWanted.Load() {
			if first, err = w.followLog(ctx); err != nil {
				return err
			}
		}
		lctx, lcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.followLogWhileWanted(lctx, first)
		}()
		defer func() { lcancel(); <-done }()
	}
	events := make(chan govici.Event, w.o.EventBuffer)
	// Register the channel before subscribing so that no event is lost
	// between the two, and subscribe before the resync so that every
	// change after the snapshot arrives as an event.
	ec.NotifyEvents(events)
	defer ec.StopEvents(events)
	if err := ec.Subscribe(EventIKEUpdown, EventChildUpdown, EventIKERekey, EventChildRekey); err != nil {
		return err
	}
	// lastList is how long the last listing took, lastAt when it
	// ended: the periodic resync waits at least ten listings' time, so
	// that listing a large fleet never takes more than a tenth of
	// charon's VICI time. (ListSAs bounds each listing by the fleet's
	// size, listTimeout.)
	var (
		lastList time.Duration
		lastAt   time.Time
	)
	resync := func() error {
		begin := time.Now()
		sas, err := c.ListSAs(ctx)
		if err != nil {
			return err
		}
		lastAt = time.Now()
		lastList = lastAt.Sub(begin)
		w.resynced(sas, info)
		return nil
	}
	if err := resync(); err != nil {
		return err
	}
	var tick <-chan time.Time
	if w.o.ResyncInterval > 0 {
		t := time.NewTicker(w.o.ResyncInterval)
		defer t.Stop()
		tick = t.C
	}
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	pending := false // a resync is due once the channel is drained
	for {
		if pending && len(events) == 0 {
			pending = false
			if err := resync(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
			if info == nil {
				if info, err = w.askCharon(ctx, c); err == nil {
					w.log.Info("charon said which plugins and algorithms it has")
				} else {
					w.log.Debug("charon still did not say which plugins and algorithms it has", "err", err)
				}
			}
			if since := time.Since(lastAt); since < 10*lastList {
				w.log.Debug("periodic resync skipped: the last listing took long", "took", lastList, "since", since)
				continue
			}
			if err := resync(); err != nil {
				return err
			}
		case <-settle.C:
			if err := resync(); err != nil {
				return err
			}
		case ve, ok := <-events:
			if !ok {
				return errSessionClosed
			}
			if len(events) >= cap(events)-1 {
				// The channel was full: govici may have dropped
				// events since. One warning per resync.
				if !pending {
					w.log.Warn("VICI event channel full, events may have been dropped; resynchronising", "capacity", cap(events))
				}
				pending = true
			}
			ev, err := ParseEvent(ve.Name, ve.Message)
			if err != nil {
				w.log.Warn("unparsable VICI event, resynchronising", "event", ve.Name, "err", err)
				pending = true
				continue
			}
			w.log.Debug("VICI event", "kind", ev.Kind, "conn", ev.IKE.Conn, "ike", ev.IKE.UniqueID)
			if !w.applyEvent(ev, info) {
				pending = true
				continue
			}
			if (ev.Kind == IKERekey || ev.Kind == ChildRekey) && w.o.RekeySettle > 0 {
				settle.Reset(w.o.RekeySettle)
			}
		}
	}
}

// resynced replaces the state with the listing sas and publishes it as a
// resync, with what charon said of itself (info).
func (w *Watcher) resynced(sas []IKESA, info *Charon) {
	w.change(func(st state) (Update, bool) {
		clear(st)
		for _, sa := range sas {
			st[sa.UniqueID] = sa
		}
		return Update{Cause: CauseResync, Changed: sas, Charon: info}, true
	})
}

// applyEvent patches the state with ev and publishes what it changed; it
// reports false, publishing nothing, for an event it cannot apply (a
// resync is due).
func (w *Watcher) applyEvent(ev Event, info *Charon) bool {
	applied := false
	w.change(func(st state) (Update, bool) {
		if applied = st.apply(ev); !applied {
			return Update{}, false
		}
		changed, removed := st.delta(ev)
		return Update{Cause: CauseEvent, Event: &ev, Changed: changed, Removed: removed, Charon: info}, true
	})
	return applied
}

// askCharon asks charon what it is and has (Client.Charon), within 10 s.
func (w *Watcher) askCharon(ctx context.Context, c *Client) (*Charon, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return c.Charon(ctx)
}

// FollowLog starts (true) or stops (false) following charon's log for
// OnChildFailure; it may be called from any goroutine. It holds across
// reconnections.
func (w *Watcher) FollowLog(on bool) {
	if w.logWanted.Swap(on) == on {
		return
	}
	select {
	case w.logChanged <- struct{}{}:
	default:
	}
}

// followLogWhileWanted runs the log session while FollowLog(true) is in
// force, until ctx is done; stop, if not nil, ends the session already
// open. A session that cannot be opened is tried again at the next change
// or after a second.
func (w *Watcher) followLogWhileWanted(ctx context.Context, stop func()) {
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for {
		switch want := w.logWanted.Load(); {
		case want && stop == nil:
			s, err := w.followLog(ctx)
			if err != nil && ctx.Err() == nil {
				w.log.Warn("cannot follow charon's log", "err", err)
			}
			stop = s
		case !want && stop != nil:
			stop()
			stop = nil
		}
		retry := (<-chan time.Time)(nil)
		if w.logWanted.Load() && stop == nil {
			retry = time.After(time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-w.logChanged:
		case <-retry:
		}
	}
}

// followLog opens a VICI session subscribed to charon's log event and
// hands the CHILD_SA failures among its messages to OnChildFailure until
// ctx is done or stop is called. The session's end is not an error of
// the watcher's: the SA sessions notice charon going away.
func (w *Watcher) followLog(ctx context.Context) (stop func(), err error) {
	lc, err := DialRetry(ctx, w.o.Socket, w.o.Backoff, w.log)
	if err != nil {
		return nil, err
	}
	events := make(chan govici.Event, w.o.EventBuffer)
	lc.NotifyEvents(events)
	if err := lc.Subscribe(EventLog); err != nil {
		lc.StopEvents(events)
		lc.Close()
		return nil, err
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-ctx.Done():
				return
			case <-done:
				return
			case ve, ok := <-events:
				if !ok {
					return
				}
				e, err := ParseLogEvent(ve.Message)
				if err != nil || !e.ChildFailure() {
					continue
				}
				w.o.OnChildFailure(e)
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		lc.StopEvents(events)
		lc.Close()
	}, nil
}

type sessionError string

func (e sessionError) Error() string { return string(e) }

const errSessionClosed = sessionError("vici: charon closed the session")
