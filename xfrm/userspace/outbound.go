package userspace

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/mpsa/mpsa/xfrm/esp"
)

// The outbound path is a pipeline after wireguard-go's (device/send.go),
// because AES-CBC encryption is serial per packet and one goroutine
// sealing everything was the throughput limit:
//
//   - the reader takes a batch element from a fixed pool, reads a batch
//     from the TUN into it, routes every packet, gives each its sequence
//     number (so that numbers follow read order) and hands the element to
//     the sender's in-order queue and to the sealers' work queue;
//   - Config.Sealers sealers take whole elements from the work queue and
//     seal them, each with its own Crypter and all packets of an element
//     in one esp.Crypter.SealBatch, in whatever order they finish;
//   - the sender takes elements from the in-order queue, waits until each
//     is sealed, sends it and returns it to the pool.
//
// Packets therefore leave in the order they were read, which TCP relies
// on. The pool bounds the packets in flight: when it is empty the reader
// waits (it never drops), which holds the packets back in the TUN's queue.

// outElemsPerSealer is how many batch elements the pool holds per sealer:
// one being sealed, one queued behind it so that the sealer does not wait
// for the reader, and one for the element being read or sent and for the
// sealed elements waiting behind a slower one for their turn.
const outElemsPerSealer = 3

// outElem is one batch read from the TUN on its way through the outbound
// pipeline. Its buffers and arrays are allocated once, with the pool.
type outElem struct {
	// sealed is locked by the reader when it hands the element on and
	// unlocked by the sealer when every packet is sealed; the sender's
	// Lock waits for that. (A sync.Mutex may be unlocked by a goroutine
	// other than the one that locked it.)
	sealed sync.Mutex

	// bufs and sizes are the TUN read's. The reader moves the routed
	// packets' buffers to the front, in read order: bufs[:n] and
	// sealing[:n], dests[:n] and queues[:n] are the packets to send.
	bufs  [][]byte
	sizes []int
	n     int
	// out is the outbound SA when the batch was read: the element is
	// sealed with it (unless Remove retires it first) and its counters
	// are charged, whatever becomes of the SA in the meantime.
	out *saEntry
	// sealing describes each routed packet to esp.Crypter.SealBatch:
	// the reader sets its buffer, length and sequence number, the sealer
	// its ESP packet (Packet) or why sealing failed (Err).
	sealing []esp.Sealing
	// dests and queues are each routed packet's peer and send queue, set
	// by the reader.
	dests  []*dest
	queues []*sendQueue
}

// newOutElem allocates an element for batches of batch packets; each
// buffer holds the largest packet (a TSO super-packet's segment cannot be
// larger) with room for the ESP header in front and the trailer behind.
func newOutElem(batch int) *outElem {
	e := &outElem{
		bufs:    make([][]byte, batch),
		sizes:   make([]int, batch),
		sealing: make([]esp.Sealing, batch),
		dests:   make([]*dest, batch),
		queues:  make([]*sendQueue, batch),
	}
	for i := range e.bufs {
		e.bufs[i] = make([]byte, outOff+maxPacket+esp.MaxTrailerLen)
	}
	return e
}

// outPipeline holds the queues between the outbound goroutines. Each has
// room for every element of the pool, so that only taking an element from
// the pool ever waits.
type outPipeline struct {
	// free is the pool of elements not in use.
	free chan *outElem
	// work feeds the sealers; order feeds the sender, in read order.
	// The reader closes both when it stops.
	work, order chan *outElem
}

// startOutbound allocates the pool and starts the reader, the sealers and
// the sender; b.wg counts them.
func (b *Backend) startOutbound() {
	n := outElemsPerSealer * b.cfg.Sealers
	p := &outPipeline{free: make(chan *outElem, n), work: make(chan *outElem, n), order: make(chan *outElem, n)}
	for range n {
		p.free <- newOutElem(b.dev.BatchSize())
	}
	b.wg.Add(2 + b.cfg.Sealers)
	go b.readLoop(p)
	for w := range b.cfg.Sealers {
		go b.sealLoop(w, p.work)
	}
	go b.sendLoop(p.order, p.free)
}

// readLoop is the reader. It stops when the TUN is closed or, while it
// waits for an element, when the backend is; closing the queues then lets
// the sealers and the sender finish the elements in flight and stop.
func (b *Backend) readLoop(p *outPipeline) {
	defer b.wg.Done()
	defer close(p.order)
	defer close(p.work)
	for {
		var e *outElem
		select {
		case e = <-p.free:
		case <-b.closed:
			return
		}
		if !b.readBatch(e) {
			return
		}
		// The sender waits on sealed until the sealer unlocks it, so it
		// must be locked before either can see the element.
		e.sealed.Lock()
		p.order <- e
		p.work <- e
	}
}

// readBatch reads from the TUN into e until a batch has a packet to send;
// it reports false when the TUN is closed.
func (b *Backend) readBatch(e *outElem) bool {
	for {
		n, err := b.dev.Read(e.bufs, e.sizes, outOff)
		if err != nil {
			if b.isClosed() || errors.Is(err, os.ErrClosed) {
				return false
			}
			b.log.Debug("TUN read", "err", err)
			continue
		}
		if b.routeBatch(e, n) {
			return true
		}
	}
}

// routeBatch prepares the n packets just read into e: it takes the
// outbound SA once for the batch, finds each packet's peer and send queue,
// moves the routed packets to the front and numbers them in read order.
// Packets without an SA, malformed or without a route, and those for which
// the SA has no sequence number left (never wrapping) or none reserved on
// disk yet (Config.SeqLeaseDir), are counted as dropped here, once per
// batch. It reports whether a packet is left.
func (b *Backend) routeBatch(e *outElem, n int) bool {
	out := b.outbound.Load()
	if out == nil {
		if n > 0 {
			b.drops.noOutbound.Add(uint64(n))
		}
		return false
	}
	tbl := b.peers.Load()
	var malformed, noRoute, exhausted, unleased uint64
	k := 0
	for i := range n {
		pkt := e.bufs[i][outOff : outOff+e.sizes[i]]
		_, dst, ok := addrs(pkt)
		if !ok {
			malformed++
			continue
		}
		d, ok := tbl.route(dst)
		if !ok {
			noRoute++
			continue
		}
		q := b.tx4
		if d.family6 {
			q = b.tx6
		}
		if q == nil {
			noRoute++
			continue
		}
		seq, ok := out.sa.NextSeq()
		if !ok {
			exhausted++
			continue
		}
		if out.lease != nil && !out.lease.Allows(seq) {
			// Not sent: the number goes back, so that a disk that
			// cannot take the reservation for a while does not use
			// up the SA's numbers. The reader is NextSeq's only
			// caller.
			out.sa.SetLastSeq(seq - 1)
			unleased++
			continue
		}
		fixUDP6ZeroChecksum(pkt) // udpcsum.go; only packets that are sent
		// Swapping keeps every buffer in e; only their order changes.
		e.bufs[k], e.bufs[i] = e.bufs[i], e.bufs[k]
		e.sealing[k] = esp.Sealing{Buf: e.bufs[k], Off: outOff, N: e.sizes[i], Seq: seq}
		e.dests[k], e.queues[k] = d, q
		k++
	}
	if malformed > 0 {
		b.drops.malformed.Add(malformed)
	}
	if noRoute > 0 {
		b.drops.noRoute.Add(noRoute)
	}
	if exhausted > 0 {
		b.drops.seqExhausted.Add(exhausted)
		if !out.exhausted.Swap(true) {
			b.log.Error("outbound SA has used its last sequence number (2^32-1) and sends no more; packets are dropped until the controller's next SA is in use (a rekey is overdue)",
				"spi", fmt.Sprintf("%08x", out.sa.SPI()))
		}
	}
	if unleased > 0 {
		b.drops.seqLease.Add(unleased)
		if !out.unleased.Swap(true) {
			b.log.Warn("outbound packets dropped: their sequence numbers are not yet reserved on disk",
				"spi", fmt.Sprintf("%08x", out.sa.SPI()), "reserved", out.lease.Reserved(), "err", out.lease.Err())
		}
	} else if k > 0 && out.unleased.Load() {
		out.unleased.Store(false)
	}
	e.n, e.out = k, out
	return k > 0
}

// sealLoop is sealer w: it seals whole elements with its own Crypter of
// each element's SA until the reader closes the work queue. An SA that
// Remove has begun retiring since the batch was read is not used, and the
// element is left unsealed: acquire fails only once removed is set, so
// sendElem, which locks sealed after this unlocks it, sees removed too and
// counts every packet as an outbound error of the SA, as a Seal on the
// zeroed SA would (esp.ErrZeroed).
func (b *Backend) sealLoop(w int, work <-chan *outElem) {
	defer b.wg.Done()
	for e := range work {
		if e.out.acquire() {
			e.seal(e.out.seal[w])
			e.out.release()
		}
		e.sealed.Unlock()
	}
}

// seal seals e's packets in place with c, all in one SealBatch, which
// encrypts several packets side by side; sendElem counts a packet it
// refuses (Err set) as an outbound error of the SA.
func (e *outElem) seal(c *esp.Crypter) {
	c.SealBatch(e.sealing[:e.n])
}

// sendLoop is the sender: it sends the elements in read order, each once
// it is sealed, and returns them to the pool, until the reader closes the
// in-order queue. It is the only goroutine that uses the send queues.
func (b *Backend) sendLoop(order <-chan *outElem, free chan<- *outElem) {
	defer b.wg.Done()
	for e := range order {
		e.sealed.Lock()
		b.sendElem(e)
		// Unlocked again for the reader, which locks it when it hands
		// the element on next time.
		e.sealed.Unlock()
		free <- e
	}
}

// sendElem queues e's sealed packets on their send queues, flushes them,
// and adds what was sent and what failed (in sealing or in the kernel) to
// the SA's counters, once for the element. If the SA was removed since the
// batch was read, nothing is sent and every packet counts as failed, as
// on the zeroed SA: Remove promises that nothing is sent with the SA any
// more (xfrm.DataPlane), and a batch sealed just before it must not leave
// after it.
func (b *Backend) sendElem(e *outElem) {
	if e.out.removed.Load() {
		e.out.addOutErrors(uint64(e.n))
		e.reset()
		return
	}
	var t outTally
	for i := range e.n {
		p := &e.sealing[i]
		if p.Err != nil {
			t.errors++
			continue
		}
		q := e.queues[i]
		q.queue(p.Packet, e.dests[i], p.N)
		if q.full() {
			t.flush(q)
		}
	}
	for _, q := range [2]*sendQueue{b.tx4, b.tx6} {
		if q != nil && q.pending() {
			t.flush(q)
		}
	}
	if t.packets > 0 {
		e.out.outPackets.Add(t.packets)
		e.out.outBytes.Add(t.bytes)
	}
	if t.errors > 0 {
		e.out.addOutErrors(t.errors)
	}
	e.reset()
}

// reset forgets e's batch once it is sent: a pooled element keeps
// neither the SA nor the peer table alive, and no packet slice outlives
// its batch.
func (e *outElem) reset() {
	e.out = nil
	clear(e.sealing[:e.n])
	clear(e.dests[:e.n])
	e.n = 0
}

// outTally sums what one outbound batch sent and what failed, in sealing
// or in the flushes.
type outTally struct {
	packets, bytes, errors uint64
}

// flush sends q's batch and counts the result.
func (t *outTally) flush(q *sendQueue) {
	sent, bytes, failed := q.flush()
	t.packets += uint64(sent)
	t.bytes += uint64(bytes)
	t.errors += uint64(failed)
}
