package bgp

import (
	"context"
	"errors"
	"sync"
)

// runner runs a component's loop on one goroutine and queues the engine's
// calls for it in an unbounded FIFO, so that the calls (AddMember,
// SetController, ...) never wait for GoBGP: when GoBGP is busy (a
// reflector sending its whole table to a thousand members holds its lock
// for seconds), the calls are queued and applied in order.
type runner struct {
	name   string
	mu     sync.Mutex
	items  []func()
	signal chan struct{}
	done   chan struct{}
	cancel context.CancelFunc
	// ctx is the loop's context, set by start.
	ctx context.Context
	wg  sync.WaitGroup
}

func newRunner(name string) *runner {
	return &runner{name: name, signal: make(chan struct{}, 1), done: make(chan struct{})}
}

// start runs loop until ctx is done or close is called. loop must run
// the queued functions (drain) when signal fires.
func (r *runner) start(ctx context.Context, loop func(context.Context)) {
	ctx, r.cancel = context.WithCancel(ctx)
	r.ctx = ctx
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(r.done)
		loop(ctx)
	}()
}

// close stops the loop and waits for it.
func (r *runner) close() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.wg.Wait()
}

// push queues f without waiting.
func (r *runner) push(f func()) {
	r.mu.Lock()
	r.items = append(r.items, f)
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// drain runs the queued functions, in order.
func (r *runner) drain() {
	r.mu.Lock()
	items := r.items
	r.items = nil
	r.mu.Unlock()
	for _, f := range items {
		f()
	}
}

// do runs f on the loop and waits for it; it returns an error when the
// loop is not running.
func (r *runner) do(f func()) error {
	ran := make(chan struct{})
	r.push(func() { f(); close(ran) })
	select {
	case <-ran:
		return nil
	case <-r.done:
		return errors.New(r.name + ": not running")
	}
}
