package userspace

import (
	"errors"
	"os"

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

func (b *Backend) outboundLoop() {
	defer b.wg.Done()
	batch := b.dev.BatchSize()
	bufs := make([][]byte, batch)
	sizes := make([]int, batch)
	for i := range bufs {
		bufs[i] = make([]byte, outOff+maxPacket+esp.MaxTrailerLen)
	}
	for {
		n, err := b.dev.Read(bufs, sizes, outOff)
		if err != nil {
			if b.isClosed() || errors.Is(err, os.ErrClosed) {
				return
			}
			b.log.Debug("TUN read", "err", err)
			continue
		}
		b.sendBatch(bufs[:n], sizes[:n])
	}
}

// sendBatch seals and sends the packets read from the TUN.
func (b *Backend) sendBatch(bufs [][]byte, sizes []int) {
	out := b.outbound.Load()
	if out == nil {
		b.drops.noOutbound.Add(uint64(len(bufs)))
		return
	}
	tbl := b.peers.Load()
	c := out.crypters[0]
	var sealErrs uint64
	for i := range bufs {
		pkt := bufs[i][outOff : outOff+sizes[i]]
		_, dst, ok := addrs(pkt)
		if !ok {
			b.drops.malformed.Add(1)
			continue
		}
		d, ok := tbl.route(dst)
		if !ok {
			b.drops.noRoute.Add(1)
			continue
		}
		s := b.tx4
		if d.family6 {
			s = b.tx6
		}
		if s == nil {
			b.drops.noRoute.Add(1)
			continue
		}
		espPkt, err := c.Seal(bufs[i], outOff, sizes[i], out.sa.NextSeq())
		if err != nil {
			sealErrs++
			continue
		}
		s.queue(espPkt, d, sizes[i])
		if s.full() {
			b.flush(out, s)
		}
	}
	for _, s := range []sender{b.tx4, b.tx6} {
		if s != nil && s.pending() {
			b.flush(out, s)
		}
	}
	if sealErrs > 0 {
		out.outErrors.Add(sealErrs)
	}
}

func (b *Backend) flush(e *saEntry, s sender) {
	sent, bytes, failed := s.flush()
	e.outPackets.Add(uint64(sent))
	e.outBytes.Add(uint64(bytes))
	if failed > 0 {
		e.outErrors.Add(uint64(failed))
	}
}

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
	for i := range bufs {
		bufs[i] = make([]byte, inOff+maxPacket+esp.MaxTrailerLen)
	}
	for {
		n, err := s.recv(bufs, recvOff, sizes)
		if err != nil {
			if errors.Is(err, errClosed) || b.isClosed() {
				return
			}
			b.log.Debug("ESP receive", "err", err)
			continue
		}
		wbufs = b.openBatch(idx, s.local.Is4(), bufs[:n], sizes[:n], recvOff, wbufs[:0])
		if len(wbufs) > 0 {
			b.writeTUN(wbufs)
		}
	}
}

// inboundLoopUDP receives ESP in UDP on s. A received message can hold
// many ESP packets coalesced by GRO; each is copied to its own buffer,
// where openBatch decrypts it in place, so that the TUN write can coalesce
// the inner packets again.
func (b *Backend) inboundLoopUDP(idx int, s *udpSocket) {
	defer b.wg.Done()
	rbufs := make([][]byte, len(s.rx.msgs))
	sizes := make([]int, len(rbufs))
	segs := make([]int, len(rbufs))
	for i := range rbufs {
		rbufs[i] = make([]byte, maxPacket)
	}
	recvOff := inOff - esp.HeaderLen - esp.IVLen
	tbufs := make([][]byte, b.cfg.BatchSize)
	tsizes := make([]int, len(tbufs))
	for i := range tbufs {
		tbufs[i] = make([]byte, inOff+maxPacket+esp.MaxTrailerLen)
	}
	wbufs := make([][]byte, 0, len(tbufs))
	k := 0
	deliver := func() {
		wbufs = b.openBatch(idx, false, tbufs[:k], tsizes[:k], recvOff, wbufs[:0])
		if len(wbufs) > 0 {
			b.writeTUN(wbufs)
		}
		k = 0
	}
	for {
		n, err := s.recv(rbufs, 0, sizes, segs)
		if err != nil {
			if errors.Is(err, errClosed) || b.isClosed() {
				return
			}
			b.log.Debug("ESP-in-UDP receive", "err", err)
			continue
		}
		for i := 0; i < n; i++ {
			if sizes[i] <= 0 {
				b.drops.malformed.Add(1)
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
				data = data[l:]
				if k++; k == len(tbufs) {
					deliver()
				}
			}
		}
		if k > 0 {
			deliver()
		}
	}
}

func (b *Backend) writeTUN(bufs [][]byte) {
	if _, err := b.dev.Write(bufs, inOff); err != nil && !b.isClosed() {
		b.drops.tunWrite.Add(1)
		b.log.Debug("TUN write", "err", err)
	}
}

// openBatch authenticates and decrypts received ESP packets in place and
// appends the inner packets, moved to start at inOff, to wbufs.
func (b *Backend) openBatch(idx int, v4 bool, bufs [][]byte, sizes []int, recvOff int, wbufs [][]byte) [][]byte {
	set := b.sas.Load()
	tbl := b.peers.Load()
	for i := range bufs {
		if sizes[i] < 0 {
			b.drops.malformed.Add(1)
			continue
		}
		pkt := bufs[i][recvOff : recvOff+sizes[i]]
		start := recvOff
		if v4 {
			hl, ok := ipv4HeaderLen(pkt)
			if !ok {
				b.drops.malformed.Add(1)
				continue
			}
			pkt = pkt[hl:]
			start += hl
		}
		spi, ok := esp.PeekSPI(pkt)
		if !ok {
			b.drops.malformed.Add(1)
			continue
		}
		e := set.find(spi)
		if e == nil {
			b.drops.unknownSPI.Add(1)
			continue
		}
		inner, _, err := e.crypters[1+idx].Open(pkt)
		if err != nil {
			e.inErrors.Add(1)
			continue
		}
		src, dst, ok := addrs(inner)
		if !ok || !tbl.accepts(src, dst) {
			e.inErrors.Add(1)
			continue
		}
		if start+esp.HeaderLen+esp.IVLen != inOff {
			copy(bufs[i][inOff:], inner)
		}
		e.inPackets.Add(1)
		e.inBytes.Add(uint64(len(inner)))
		wbufs = append(wbufs, bufs[i][:inOff+len(inner)])
	}
	return wbufs
}
