package server

import (
	"sync"

	"github.com/mpsa/mpsa/vici"
)

// viciBatch is what the watcher reported since the loop last looked: the
// changes merged by IKE SA, so that its size is bounded by the number of
// IKE SAs however far behind the loop is.
type viciBatch struct {
	// lost: the VICI session ended at some point.
	lost bool
	// connected is the state after the last update.
	connected bool
	// resync: full holds a whole listing, to apply before changes.
	resync bool
	full   []vici.IKESA
	// changes are the newest state of each IKE SA changed since: the
	// IKE SA, or removed.
	changes map[uint32]viciChange
	// charon is what charon said of itself in the newest update that
	// carried it since the session last ended (nil when none did).
	charon *vici.Charon
}

type viciChange struct {
	sa      vici.IKESA
	removed bool
}

// add merges an update into the batch. A resync replaces whatever was
// pending. An update made by hand (Cause 0, as tests and embedders may
// hand to the server) counts as a resync with its snapshot.
func (b *viciBatch) add(u vici.Update) {
	if u.Charon != nil {
		b.charon = u.Charon
	}
	switch {
	case u.Cause == vici.CauseDisconnected || (u.Cause == 0 && !u.Snapshot.Connected):
		b.lost, b.connected = true, false
		b.charon = nil // said by the session that ended
	case u.Cause == vici.CauseEvent:
		b.connected = true
		if b.changes == nil {
			b.changes = map[uint32]viciChange{}
		}
		for _, sa := range u.Changed {
			b.changes[sa.UniqueID] = viciChange{sa: sa}
		}
		for _, id := range u.Removed {
			b.changes[id] = viciChange{removed: true}
		}
	default:
		b.connected, b.resync = true, true
		b.full = u.Snapshot.IKESAs
		if b.full == nil {
			b.full = u.Changed
		}
		clear(b.changes)
	}
}

func (b *viciBatch) reset() {
	m := b.changes
	clear(m)
	*b = viciBatch{changes: m}
}

// viciInbox hands the watcher's updates to the loop. put never blocks the
// watcher and never loses a change: updates the loop has not taken yet
// are merged (viciBatch). Two batches alternate, so that steady work
// allocates nothing.
type viciInbox struct {
	mu    sync.Mutex
	cur   *viciBatch
	spare *viciBatch
	have  bool
	ready chan struct{}
}

func newVICIInbox() *viciInbox {
	return &viciInbox{cur: &viciBatch{}, spare: &viciBatch{}, ready: make(chan struct{}, 1)}
}

// put is the watcher's OnUpdate.
func (in *viciInbox) put(u vici.Update) {
	in.mu.Lock()
	in.cur.add(u)
	in.have = true
	in.mu.Unlock()
	select {
	case in.ready <- struct{}{}:
	default:
	}
}

// take returns what was put since the last take, after a receive from
// ready; hand the batch back with done once applied.
func (in *viciInbox) take() (*viciBatch, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.have {
		return nil, false
	}
	b, next := in.cur, in.spare
	if next == nil {
		next = &viciBatch{}
	}
	in.cur, in.spare, in.have = next, nil, false
	return b, true
}

// done returns a batch taken for reuse.
func (in *viciInbox) done(b *viciBatch) {
	b.reset()
	in.mu.Lock()
	in.spare = b
	in.mu.Unlock()
}
