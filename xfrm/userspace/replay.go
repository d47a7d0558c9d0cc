package userspace

import (
	"net/netip"
	"slices"
	"sync"
)

// Anti-replay (RFC 4303 section 3.4.3), per sender. A shared SA has many
// senders, each numbering its own packets, so one window per SA would
// drop almost everything; the backend keeps one window per SA and outer
// source address of a peer (see peerTable.senders), and checks it only
// after the ICV verified, so that a packet nobody in the group made cannot
// create or move a window. Windows exist only for the slots of senders
// (slotAlloc): the peers of the peer table, and those that left it while
// an SA that is still installed was in use. Their number is bounded by the
// senders seen during the installed SAs' lifetimes, not by what arrives.
const (
	// replayWords is the size of a window's bitmap in 64-bit words, a
	// power of two so that a block's word is a mask away.
	replayWords = 32
	// ReplayWindow is how far behind the highest sequence number seen
	// from a sender a packet may be and still be accepted, once: the
	// bitmap's bits less one word, which the window slides by (RFC
	// 6479).
	ReplayWindow = (replayWords - 1) * 64
)

// replayWindow is one sender's window on one SA: an RFC 6479 bitmap of
// replayWords words, of which the word of sequence number s is
// (s/64) mod replayWords. Sliding forward clears the words it enters and
// never shifts bits. mu makes check safe for inbound goroutines of several
// sockets at once; each check holds it for a few instructions.
type replayWindow struct {
	mu sync.Mutex
	// top is the highest sequence number accepted, 0 before the first.
	top    uint32
	bitmap [replayWords]uint64
}

// check accepts seq unless it is 0 (never sent: numbering starts at 1),
// was accepted before, or is ReplayWindow or more behind the highest
// accepted; an accepted number is recorded. The caller has verified the
// packet's ICV and every other check it makes, so that only packets that
// are delivered move the window.
func (w *replayWindow) check(seq uint32) bool {
	if seq == 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if seq > w.top {
		// Clear the words between the old top's and seq's, at most
		// the whole bitmap.
		cur, next := w.top/64, seq/64
		for i, n := cur+1, uint32(0); i <= next && n < replayWords; i, n = i+1, n+1 {
			w.bitmap[i%replayWords] = 0
		}
		w.top = seq
	} else if w.top-seq >= ReplayWindow {
		return false
	}
	word, bit := &w.bitmap[(seq/64)%replayWords], uint64(1)<<(seq%64)
	if *word&bit != 0 {
		return false
	}
	*word |= bit
	return true
}

// slotAlloc gives every underlay address of the peer table the slot of
// its replay windows (saEntry.windows). A sender keeps its slot while it
// is in the table and, after it left, while an SA installed before it
// left is still installed: coming back, it finds its windows on those SAs
// as it left them, so that its packets captured before cannot be
// replayed into them. Once no such SA remains, nothing it sent can be
// accepted again (every installed SA is newer) and its slot is freed and
// reused, lowest first: the windows grow with the senders of the
// installed SAs' lifetimes, not with every address ever seen. Used under
// Backend.mu.
type slotAlloc struct {
	of map[netip.Addr]int
	// left holds the senders out of the table, with the generation of
	// the next SA installed after they left (Backend.gen).
	left map[netip.Addr]uint64
	// free are the freed slots, ascending; n is one more than the
	// highest slot ever handed out.
	free []int
	n    int
}

func newSlotAlloc() *slotAlloc {
	return &slotAlloc{of: map[netip.Addr]int{}, left: map[netip.Addr]uint64{}}
}

// get returns the slot of a, giving it the lowest free one if it has none.
func (s *slotAlloc) get(a netip.Addr) int {
	if slot, ok := s.of[a]; ok {
		return slot
	}
	slot := s.n
	if len(s.free) > 0 {
		slot, s.free = s.free[0], s.free[1:]
	} else {
		s.n++
	}
	s.of[a] = slot
	return slot
}

// settle notes which senders are out of t (from generation gen on) and
// frees the slots of those that left no earlier than oldest, the
// generation of the oldest installed SA (gen if none), returning the
// freed slots.
func (s *slotAlloc) settle(t *peerTable, gen, oldest uint64) []int {
	for a := range s.of {
		if t.sender(a) != nil {
			delete(s.left, a)
		} else if _, ok := s.left[a]; !ok {
			s.left[a] = gen
		}
	}
	var freed []int
	for a, at := range s.left {
		if oldest < at {
			continue // an SA installed before it left is still there
		}
		freed = append(freed, s.of[a])
		delete(s.of, a)
		delete(s.left, a)
	}
	if len(freed) > 0 {
		s.free = append(s.free, freed...)
		slices.Sort(s.free)
	}
	return freed
}
