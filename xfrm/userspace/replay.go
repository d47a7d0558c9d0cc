package userspace

import "sync"

// Anti-replay (RFC 4303 section 3.4.3), per sender. A shared SA has many
// senders, each numbering its own packets, so one window per SA would
// drop almost everything; the backend keeps one window per SA and outer
// source address of a peer (see peerTable.senders), and checks it only
// after the ICV verified, so that a packet nobody in the group made cannot
// create or move a window. Windows exist only for the peers of the peer
// table: their number is bounded by the group, not by what arrives.
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
