package vici

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// VICI packet types (strongSwan's vici_operation_t).
const (
	pktEventRegister   = 3
	pktEventUnregister = 4
	pktEventConfirm    = 5
	pktEventUnknown    = 6
	pktEvent           = 7
)

// maxPacket bounds a VICI packet (charon's own limit is 512 KiB).
const maxPacket = 1 << 24

// gateConn sits between govici and the VICI socket and holds event
// packets back while a (un)subscription is in progress.
//
// govici v0.8 deadlocks when an event arrives while Subscribe waits for
// charon's confirmation: Subscribe holds the session's event lock while it
// waits, and govici's reader needs that lock to dispatch the event before
// it can read the confirmation. charon sends the confirmation after it has
// added the registration, so an event for an already (or just) registered
// type can come first; under load this hangs the session forever. With the
// gate closed, events wait here and every other packet passes, so the
// confirmation arrives; the held events follow, in order, once Subscribe
// has returned and the gate opens.
//
// Deadlines keep their net.Conn meaning: govici sets a read deadline as a
// watchdog while it waits for a response (5 s past the caller's deadline)
// and a Read that passes it fails, which ends the session.
type gateConn struct {
	net.Conn

	mu    sync.Mutex
	cond  *sync.Cond
	queue [][]byte // whole packets (length prefix included) not yet delivered
	cur   []byte   // rest of the packet being delivered
	gate  int      // > 0: hold event packets
	err   error    // the reader's terminal error

	deadline time.Time   // read deadline, zero for none
	timer    *time.Timer // wakes Read at the deadline
}

func newGateConn(c net.Conn) *gateConn {
	g := &gateConn{Conn: c}
	g.cond = sync.NewCond(&g.mu)
	go g.reader()
	return g
}

// reader moves whole packets from the socket to the queue.
func (g *gateConn) reader() {
	for {
		pkt, err := readPacket(g.Conn)
		g.mu.Lock()
		if err != nil {
			g.err = err
			g.cond.Broadcast()
			g.mu.Unlock()
			return
		}
		g.queue = append(g.queue, pkt)
		g.cond.Broadcast()
		g.mu.Unlock()
	}
}

func readPacket(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > maxPacket {
		return nil, fmt.Errorf("vici: bad packet length %d", n)
	}
	pkt := make([]byte, 4+int(n))
	copy(pkt, hdr[:])
	if _, err := io.ReadFull(r, pkt[4:]); err != nil {
		return nil, err
	}
	return pkt, nil
}

// Read hands govici the next deliverable packet: the oldest one, or while
// the gate is closed the oldest one that is not an event.
func (g *gateConn) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for len(g.cur) == 0 {
		i := -1
		for j, pkt := range g.queue {
			if g.gate == 0 || pkt[4] != pktEvent {
				i = j
				break
			}
		}
		if i >= 0 {
			g.cur = g.queue[i]
			g.queue = append(g.queue[:i:i], g.queue[i+1:]...)
			break
		}
		if g.err != nil {
			return 0, g.err
		}
		if !g.deadline.IsZero() && !time.Now().Before(g.deadline) {
			return 0, os.ErrDeadlineExceeded
		}
		g.cond.Wait()
	}
	n := copy(p, g.cur)
	g.cur = g.cur[n:]
	return n, nil
}

// hold closes the gate; release opens it again.
func (g *gateConn) hold() {
	g.mu.Lock()
	g.gate++
	g.mu.Unlock()
}

func (g *gateConn) release() {
	g.mu.Lock()
	g.gate--
	g.cond.Broadcast()
	g.mu.Unlock()
}

// SetReadDeadline sets the deadline for Read; zero means none. It applies
// to the packets gateConn hands out, not to the socket, which its reader
// goroutine keeps reading.
func (g *gateConn) SetReadDeadline(t time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.deadline = t
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
	if !t.IsZero() {
		g.timer = time.AfterFunc(time.Until(t), func() {
			g.mu.Lock()
			g.cond.Broadcast()
			g.mu.Unlock()
		})
	}
	g.cond.Broadcast()
	return nil
}

// SetDeadline sets the read and write deadlines.
func (g *gateConn) SetDeadline(t time.Time) error {
	if err := g.SetReadDeadline(t); err != nil {
		return err
	}
	return g.Conn.SetWriteDeadline(t)
}

// Close closes the socket; pending and later Reads fail.
func (g *gateConn) Close() error {
	err := g.Conn.Close()
	g.mu.Lock()
	if g.err == nil {
		g.err = net.ErrClosed
	}
	g.cond.Broadcast()
	g.mu.Unlock()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
