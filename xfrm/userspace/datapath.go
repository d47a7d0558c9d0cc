package userspace

import (
	"errors"
	"net/netip"

	"github.com/mpsa/mpsa/xfrm/esp"
)

const (
	// outOff is where an inner packet read from the TUN starts in its
	// buffer: the ESP header and IV are written in front of it.
	outOff = 32
	// inOff is where a decrypted inner packet starts when it is written
	// to the TUN: room for the virtio header in front, and for the outer
	// IPv4 header, ESP header and IV that precede it when received.
	inOff = 64
	// maxPacket bounds every buffer: the largest IP packet, a TSO
	// super-packet or a GRO-coalesced write.
	maxPacket = 65535
)

func (b *Backend) inboundLoop(idx int, s *espSocket) {
	defer b.wg.Done()
	batch := len(s.rx.msgs)
	// The ESP header and IV sit right before inOff after receipt; a raw
	// IPv4 socket delivers the (usually 20-byte) IPv4 header as well.
	recvOff := inOff - esp.HeaderLen - esp.IVLen
	if s.local.Is4() {
		recvOff -= 20
	}
	bufs := make([][]byte, batch)
	wbufs := make([][]byte, 0, batch)
	sizes := make([]int, batch)
	segs := make([]int, batch) // always 0: a raw socket has no GRO
	srcs := make([]netip.Addr, batch)
	for i := range bufs {
		bufs[i] = make([]byte, inOff+maxPacket+esp.MaxTrailerLen)
	}
	for {
		n, err := s.recv(bufs, recvOff, sizes, segs, srcs)
		if err != nil {
			if errors.Is(err, errClosed) || b.isClosed() {
				return
			}
			b.log.Debug("ESP receive", "err", err)
			continue
		}
		wbufs = b.openBatch(idx, s.local.Is4(), bufs[:n], sizes[:n], srcs[:n], recvOff, wbufs[:0])
		if len(wbufs) > 0 {
			b.writeTUN(wbufs)
		}
	}
}

// inboundLoopUDP receives ESP in UDP on s. A received message can hold
// many ESP packets coalesced by GRO; each is copied to its own buffer,
// where openBatch decrypts it in place, so that the TUN write can coalesce
// the inner packets again.
func (b *Backend) inboundLoopUDP(idx int, s *espSocket) {
	defer b.wg.Done()
	rbufs := make([][]byte, len(s.rx.msgs))
	sizes := make([]int, len(rbufs))
	segs := make([]int, len(rbufs))
	srcs := make([]netip.Addr, len(rbufs))
	for i := range rbufs {
		rbufs[i] = make([]byte, maxPacket)
	}
	recvOff := inOff - esp.HeaderLen - esp.IVLen
	tbufs := make([][]byte, b.cfg.BatchSize)
	tsizes := make([]int, len(tbufs))
	tsrcs := make([]netip.Addr, len(tbufs))
	for i := range tbufs {
		tbufs[i] = make([]byte, inOff+maxPacket+esp.MaxTrailerLen)
	}
	wbufs := make([][]byte, 0, len(tbufs))
	k := 0
	deliver := func() {
		wbufs = b.openBatch(idx, false, tbufs[:k], tsizes[:k], tsrcs[:k], recvOff, wbufs[:0])
		if len(wbufs) > 0 {
			b.writeTUN(wbufs)
		}
		k = 0
	}
	for {
		n, err := s.recv(rbufs, 0, sizes, segs, srcs)
		if err != nil {
			if errors.Is(err, errClosed) || b.isClosed() {
				return
			}
			b.log.Debug("ESP-in-UDP receive", "err", err)
			continue
		}
		var malformed uint64
		for i := 0; i < n; i++ {
			if sizes[i] <= 0 {
				malformed++
				continue
			}
			data := rbufs[i][:sizes[i]]
			seg := segs[i]
			if seg <= 0 {
				seg = len(data)
			}
			for len(data) > 0 {
				l := min(seg, len(data))
				tsizes[k] = copy(tbufs[k][recvOff:], data[:l])
				tsrcs[k] = srcs[i]
				data = data[l:]
				if k++; k == len(tbufs) {
					deliver()
				}
			}
		}
		if k > 0 {
			deliver()
		}
		if malformed > 0 {
			b.drops.malformed.Add(malformed)
		}
	}
}

// writeTUN writes a batch of inner packets to the TUN; a failed write
// counts once in Drops.TUNWriteErrors, however many packets it held.
func (b *Backend) writeTUN(bufs [][]byte) {
	if _, err := b.dev.Write(bufs, inOff); err != nil && !b.isClosed() {
		b.drops.tunWrite.Add(1)
		b.log.Debug("TUN write", "err", err)
	}
}

// openBatch authenticates and decrypts received ESP packets in place and
// appends the inner packets, moved to start at inOff, to wbufs; srcs are
// the packets' outer source addresses. Counters are summed over the batch
// and added once (per SA for the SA's).
//
// The checks, in order: the outer source must be a peer's underlay
// address (before any cryptography, so that strangers cost little); the
// ICV must verify (esp.Crypter.Open); the inner source must lie in that
// peer's prefixes (origin binding) and the inner destination in a local
// prefix; and last the sequence number must be new to that peer's window
// on the SA, which records it. A packet that fails an earlier check
// therefore never moves a window.
func (b *Backend) openBatch(idx int, v4 bool, bufs [][]byte, sizes []int, srcs []netip.Addr, recvOff int, wbufs [][]byte) [][]byte {
	set := b.sas.Load()
	tbl := b.peers.Load()
	var malformed, unknownSPI, unknownPeer, origin, replay uint64
	var t inTally
	// The sender of the previous packet: a batch mostly comes from few.
	var lastSrc netip.Addr
	var snd *sender
	for i := range bufs {
		if sizes[i] < 0 {
			malformed++
			continue
		}
		pkt := bufs[i][recvOff : recvOff+sizes[i]]
		start := recvOff
		if v4 {
			hl, ok := ipv4HeaderLen(pkt)
			if !ok {
				malformed++
				continue
			}
			pkt = pkt[hl:]
			start += hl
		}
		spi, ok := esp.PeekSPI(pkt)
		if !ok {
			malformed++
			continue
		}
		e := set.find(spi)
		if e == nil {
			unknownSPI++
			continue
		}
		if src := srcs[i]; src != lastSrc || snd == nil {
			lastSrc, snd = src, tbl.sender(src)
		}
		if snd == nil {
			unknownPeer++
			continue
		}
		if !t.charge(e) {
			t.errors++ // the SA is being removed
			continue
		}
		inner, seq, err := e.open[idx].Open(pkt)
		if err != nil {
			t.errors++
			continue
		}
		src, dst, ok := addrs(inner)
		if !ok || !tbl.toLocal(dst) {
			t.errors++
			continue
		}
		if !snd.owns(src) {
			origin++
			continue
		}
		w := e.window(snd.slot)
		if w == nil {
			// Windows grow before a peer table or SA is published:
			// a sender without one is a fault of ours, not a
			// replay. Dropped all the same, as an error of the SA.
			t.errors++ // the SA's in errors
			continue
		}
		if !w.check(seq) {
			replay++
			continue
		}
		if start+esp.HeaderLen+esp.IVLen != inOff {
			copy(bufs[i][inOff:], inner)
		}
		t.packets++
		t.bytes += uint64(len(inner))
		wbufs = append(wbufs, bufs[i][:inOff+len(inner)])
	}
	t.flush()
	if malformed > 0 {
		b.drops.malformed.Add(malformed)
	}
	if unknownSPI > 0 {
		b.drops.unknownSPI.Add(unknownSPI)
	}
	if unknownPeer > 0 {
		b.drops.unknownPeer.Add(unknownPeer)
	}
	if origin > 0 {
		b.drops.origin.Add(origin)
	}
	if replay > 0 {
		b.drops.replay.Add(replay)
	}
	return wbufs
}

// inTally sums the inbound counters of one SA over a run of packets of an
// inbound batch, and holds the SA's keys (saEntry.acquire) for that run.
type inTally struct {
	e                      *saEntry
	held                   bool
	packets, bytes, errors uint64
}

// charge makes e the SA being counted and acquires its keys; what was
// counted for another SA before is added to that SA's counters first,
// and that SA released. It reports whether the keys may be used: not once
// Remove has begun retiring e.
func (t *inTally) charge(e *saEntry) bool {
	if e != t.e {
		t.flush()
		t.e, t.held = e, e.acquire()
	}
	return t.held
}

// flush adds what was counted to the SA's counters, releases the SA and
// starts over.
func (t *inTally) flush() {
	if t.e != nil {
		if t.packets > 0 {
			t.e.inPackets.Add(t.packets)
			t.e.inBytes.Add(t.bytes)
		}
		if t.errors > 0 {
			t.e.addInErrors(t.errors)
		}
		if t.held {
			t.e.release()
		}
	}
	*t = inTally{}
}
