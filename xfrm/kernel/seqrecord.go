package kernel

import (
	"errors"
	"fmt"
	"time"

	"github.com/mpsa/mpsa/xfrm/seqlease"
)

// DefaultSeqReserve is how far ahead of the highest outbound sequence
// number of an SA the backend keeps its record on disk at least
// (Config.SeqReserve): 2^24 numbers, what one outbound state sends in 16 s
// at a million packets a second. A power loss skips at most that many
// numbers, well under 1% of the 2^32-1.
const DefaultSeqReserve = 1 << 24

// DefaultSeqCheckInterval is how often the backend reads its outbound
// states' sequence numbers to keep their record ahead, unless a Counters
// call read them less than half of it ago (Config.SeqCheckInterval).
const DefaultSeqCheckInterval = 5 * time.Second

// SeqMargin is added to the last sequence number read from an outbound
// state before it is deleted. Its out policies stop sending before the
// number is read (they block, or are gone), but a packet that passed the
// policy lookup just before can still take a number until the state is
// deleted: at most one packet, or one GSO burst of segments, per CPU or
// preempted sender. 2^16 numbers cover that with room to spare and cost
// nothing but numbers skipped.
const SeqMargin = 1 << 16

// seqRecord is what the backend keeps of one SA's sequence-number lease
// (Config.SeqLeaseDir).
type seqRecord struct {
	lease *seqlease.Lease
	// high is the highest outbound sequence number of the SA's states at
	// the last check, at the time at. skipped counts the numbers that
	// noteSeq added since (SeqMargin, skipped, not sent), which the rate
	// leaves out.
	high    uint32
	at      time.Time
	skipped uint32
	// unread is set when one of the SA's outbound states was deleted
	// without its last number read: the record then keeps the
	// reservation at Close instead of the exact number.
	unread bool
	// outran is set while the states' numbers are past the reservation,
	// failing while a reservation cannot be written; each is logged
	// once.
	outran, failing bool
}

// pendingReserve is a reservation to write once b.mu is released.
type pendingReserve struct {
	spi  uint32
	rec  *seqRecord
	upTo uint32
}

// maxAheadFactor caps the distance the rate asks for, in multiples of
// the least distance (SeqReserve): a burst, or a gap between two checks
// much shorter than the interval, would otherwise spend a large part of
// the 2^32-1 numbers on one reservation.
const maxAheadFactor = 16

// reserveAhead tells how far the record of an SA should reach, given the
// reservation on disk, the highest sequence number of its outbound states
// now, the numbers they sent since the last check, the time since that
// check, the check interval and the least distance to keep: at least
// least, and four check intervals' worth of numbers at the rate since the
// last check, but never more than maxAheadFactor times least. It writes
// (write true) only when less than half of that distance is left, so the
// disk sees one write per half distance.
func reserveAhead(reserved, high, sent uint32, elapsed, interval time.Duration, least uint32) (upTo uint32, write bool) {
	ahead := uint64(least)
	if elapsed > 0 && sent > 0 {
		perInterval := float64(sent) * float64(interval) / float64(elapsed)
		ahead = max(ahead, uint64(min(4*perInterval, float64(maxAheadFactor)*float64(least))))
	}
	if reserved == seqlease.Max || uint64(high)+ahead/2 <= uint64(reserved) {
		return reserved, false
	}
	return uint32(min(uint64(high)+ahead, seqlease.Max)), true
}

// openLeases opens the lease directory and removes the leases of SAs
// that ended without Remove, as the userspace data plane does.
func (b *Backend) openLeases() error {
	d, err := seqlease.OpenPruned(b.cfg.SeqLeaseDir, seqlease.PruneAge, b.log)
	if err != nil {
		return fmt.Errorf("kernel data plane: %w", err)
	}
	b.leases = d
	return nil
}

func leaseName(spi uint32) string { return fmt.Sprintf("%08x", spi) }

// raiseRecords records on disk the highest sequence numbers per SPI of
// the outbound states an earlier run left, before New deletes them.
func (b *Backend) raiseRecords(found map[uint32]uint32) error {
	if b.leases == nil {
		return nil
	}
	for spi, used := range found {
		if err := b.leases.Raise(leaseName(spi), used); err != nil {
			return fmt.Errorf("kernel data plane: record the sequence numbers of SA %08x of an earlier run: %w", spi, err)
		}
	}
	return nil
}

// planRecords compares each SA's record with the highest sequence number
// of its outbound states in states (a dump of the namespace's states) or
// of those deleted before, and returns the reservations to write; b.mu is
// held. The cost is that of
// the dump, which Counters reads anyway, and a write per SA only when its
// numbers near the record.
func (b *Backend) planRecords(states []stateInfo, now time.Time) []pendingReserve {
	if b.leases == nil {
		return nil
	}
	b.lastCheck = now
	high := make(map[uint32]uint32, len(b.recs))
	for _, s := range states {
		if s.reqid != b.cfg.ReqID || s.ifid != b.cfg.IfID || !s.src.IsValid() || s.src.IsUnspecified() {
			continue
		}
		if _, ok := b.recs[s.spi]; ok && s.oseq > high[s.spi] {
			high[s.spi] = s.oseq
		}
	}
	var out []pendingReserve
	for spi, r := range b.recs {
		// The states deleted in this run count too (a peer that left).
		h := max(high[spi], b.seq[spi])
		if h == 0 {
			continue
		}
		reserved := r.lease.Reserved()
		switch {
		case h > reserved && !r.outran:
			r.outran = true
			b.log.Warn("outbound sequence numbers passed their record on disk: after a power loss now, peers with the userspace data plane would drop this member's packets as replays until its numbers pass where they were, or the next SA; the record is written further ahead from now on",
				"spi", fmt.Sprintf("%08x", spi), "sequence", h, "recorded", reserved)
		case h <= reserved:
			r.outran = false
		}
		var elapsed time.Duration
		if !r.at.IsZero() {
			elapsed = now.Sub(r.at)
		}
		// Numbers sent since the last check: SeqMargin added by
		// noteSeq was skipped, not sent.
		var sent uint32
		if h > r.high {
			sent = h - r.high - min(r.skipped, h-r.high)
		}
		if upTo, write := reserveAhead(reserved, h, sent, elapsed, b.cfg.SeqCheckInterval, b.cfg.SeqReserve); write {
			out = append(out, pendingReserve{spi: spi, rec: r, upTo: upTo})
		}
		r.high, r.at, r.skipped = h, now, 0
	}
	return out
}

// writeRecords writes the reservations planRecords returned, without
// b.mu, and notes failures (logged once per SA, listed by Warnings).
func (b *Backend) writeRecords(ps []pendingReserve) {
	for _, p := range ps {
		err := p.rec.lease.Reserve(p.upTo)
		b.mu.Lock()
		if b.closed || b.recs[p.spi] != p.rec {
			// Removed or settled meanwhile: nothing to record.
			b.mu.Unlock()
			continue
		}
		b.noteRecordErr(p.spi, p.rec, err)
		b.mu.Unlock()
	}
}

// noteRecordErr logs and lists a failed write of an SA's record, once,
// and its recovery; b.mu is held.
func (b *Backend) noteRecordErr(spi uint32, r *seqRecord, err error) {
	switch {
	case err != nil && !r.failing:
		r.failing = true
		b.seqWarnings[spi] = fmt.Sprintf("SA %08x: its sequence-number record cannot be written (%v); the kernel goes on sending, but after a power loss peers with the userspace data plane would drop this member's packets as replays until its numbers pass where they were, or the next SA", spi, err)
		b.log.Error("cannot write the sequence-number record ahead of the kernel's numbers", "spi", fmt.Sprintf("%08x", spi), "err", err)
	case err == nil && r.failing:
		r.failing = false
		delete(b.seqWarnings, spi)
		b.log.Info("sequence-number record written again", "spi", fmt.Sprintf("%08x", spi), "reserved", r.lease.Reserved())
	}
}

// ensureReserved makes the record of spi reach start plus the least
// distance before an outbound state starting at start is added; b.mu is
// held. A failure is logged and listed, not returned: the kernel's
// numbers cannot be held to the record anyway, and the state is what
// keeps traffic flowing.
func (b *Backend) ensureReserved(spi, start uint32) {
	r := b.recs[spi]
	if r == nil {
		return
	}
	if upTo, write := reserveAhead(r.lease.Reserved(), start, 0, 0, b.cfg.SeqCheckInterval, b.cfg.SeqReserve); write {
		b.noteRecordErr(spi, r, r.lease.Reserve(upTo))
	}
}

// settleRecords records each SA's last sequence number once its outbound
// states are deleted (Close, Flush): the highest the backend read, or,
// if a state went unread, at least the reservation; b.mu is held.
func (b *Backend) settleRecords() error {
	var errs []error
	for spi, r := range b.recs {
		used := b.seq[spi]
		if r.unread {
			used = max(used, r.lease.Reserved())
		}
		if err := r.lease.Settle(used); err != nil {
			errs = append(errs, fmt.Errorf("record the last sequence number of SA %08x: %w", spi, err))
		}
	}
	b.recs = map[uint32]*seqRecord{}
	return errors.Join(errs...)
}

// startSeqChecks starts the goroutine that keeps the records ahead when
// Counters does not.
func (b *Backend) startSeqChecks() {
	if b.leases == nil {
		return
	}
	stop, done := make(chan struct{}), make(chan struct{})
	b.chkStop, b.chkDone = stop, done
	go func() {
		defer close(done)
		t := time.NewTicker(b.cfg.SeqCheckInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				b.checkSeq(now)
			}
		}
	}()
}

// checkSeq reads the states and keeps the records ahead, unless Counters
// did so less than half an interval ago or nothing is sent.
func (b *Backend) checkSeq(now time.Time) {
	b.mu.Lock()
	if b.closed || len(b.cur.out) == 0 || now.Sub(b.lastCheck) < b.cfg.SeqCheckInterval/2 {
		b.mu.Unlock()
		return
	}
	states, err := b.xs.listStates()
	if err != nil {
		b.mu.Unlock()
		b.log.Warn("cannot read the outbound sequence numbers to keep their record ahead", "err", err)
		return
	}
	ps := b.planRecords(states, now)
	b.mu.Unlock()
	b.writeRecords(ps)
}

// stopSeqChecks stops the goroutine of startSeqChecks and waits for it;
// b.mu is held and released meanwhile, as in stopMonitor.
func (b *Backend) stopSeqChecks() {
	if b.chkStop == nil {
		return
	}
	close(b.chkStop)
	b.mu.Unlock()
	<-b.chkDone
	b.mu.Lock()
	b.chkStop = nil
}
