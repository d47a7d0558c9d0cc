package bgp

import "sync"

// cmdQueue is an unbounded FIFO of functions for a loop to run, so that
// the engine's calls (AddMember, SetController, ...) never wait for GoBGP:
// when GoBGP is busy (a reflector sending its whole table to a thousand
// members holds its lock for seconds), the calls are queued and applied in
// order.
type cmdQueue struct {
	mu     sync.Mutex
	items  []func()
	signal chan struct{}
}

func newCmdQueue() *cmdQueue { return &cmdQueue{signal: make(chan struct{}, 1)} }

// push queues f.
func (q *cmdQueue) push(f func()) {
	q.mu.Lock()
	q.items = append(q.items, f)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// take returns the queued functions and empties the queue.
func (q *cmdQueue) take() []func() {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items = nil
	return items
}
