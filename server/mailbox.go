package server

import "sync"

// latest holds the newest value handed to it and signals its reader; older
// values not read yet are replaced, never queued. It suits full-state
// updates such as VICI snapshots, whose producer must never block.
type latest[T any] struct {
	mu    sync.Mutex
	v     T
	have  bool
	ready chan struct{}
}

func newLatest[T any]() *latest[T] { return &latest[T]{ready: make(chan struct{}, 1)} }

func (l *latest[T]) put(v T) {
	l.mu.Lock()
	l.v, l.have = v, true
	l.mu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default:
	}
}

// take returns the newest value after a receive from ready.
func (l *latest[T]) take() (T, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.v, l.have
	var zero T
	l.v, l.have = zero, false
	return v, ok
}
