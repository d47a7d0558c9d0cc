package server

import "time"

// pacer is the token bucket that every request of a controller goes
// through (an MPSA_PUT and its retransmissions): up to burst at once, then
// rate per second, so that a rekey of 10,000 members does not put 10,000
// datagrams into charon at once. It is the daemon's, shared by its groups:
// they all go through the same charon. Members wait their turn in one FIFO
// queue; a member's datagram is built when its turn comes, so that it
// carries the newest SA and its retransmission timer starts when it
// leaves. Answers to the members' own requests are not paced.
type pacer struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time // when tokens was computed
	queue  []*ctlMember
	head   int
	// wake is the time of the next token while members wait.
	wake deadline
}

func newPacer(rate, burst int, now time.Time) *pacer {
	p := &pacer{last: now}
	p.configure(rate, burst)
	p.tokens = p.burst
	return p
}

// configure sets the rate and burst (at least 1 each); tokens already
// there stay, up to the new burst.
func (p *pacer) configure(rate, burst int) {
	p.rate, p.burst = float64(max(rate, 1)), float64(max(burst, 1))
	p.tokens = min(p.tokens, p.burst)
}

func (p *pacer) refill(now time.Time) {
	if dt := now.Sub(p.last); dt > 0 {
		p.tokens = min(p.burst, p.tokens+dt.Seconds()*p.rate)
	}
	p.last = now
}

// take spends a token if there is one.
func (p *pacer) take() bool {
	if p.tokens < 1 {
		return false
	}
	p.tokens--
	return true
}

// pacerTick is the shortest sleep of the pacer while members wait: when
// it wakes it sends what the tokens allow, so that at push_rate 1000 it
// sends twenty at a time every 20 ms instead of waking for every
// datagram. Sending in small batches keeps the cost per datagram low all
// along the way (mpsad's loop, charon's kernel-libipsec reading its TUN
// device, the members): the scale harness measured the CPU of a rekey of
// 1,000 twice as high when they came one by one. The sleep is shorter
// when the bucket would fill up meanwhile (push_burst below 40 ms of
// push_rate), which would lower the rate.
const pacerTick = 20 * time.Millisecond

// untilToken is how long to sleep: until the next whole token, and at
// least a tick, which is at most the time the bucket takes to fill half.
func (p *pacer) untilToken() time.Duration {
	d := time.Duration((1 - p.tokens) / p.rate * float64(time.Second))
	tick := min(pacerTick, time.Duration(p.burst/2/p.rate*float64(time.Second)))
	return max(d, tick)
}

func (p *pacer) waiting() int { return len(p.queue) - p.head }

func (p *pacer) push(m *ctlMember) { p.queue = append(p.queue, m) }

func (p *pacer) front() *ctlMember { return p.queue[p.head] }

func (p *pacer) pop() *ctlMember {
	m := p.queue[p.head]
	p.queue[p.head] = nil
	p.head++
	switch {
	case p.head == len(p.queue):
		p.queue, p.head = p.queue[:0], 0
	case p.head >= 1024 && p.head*2 >= len(p.queue):
		// Move the waiting half down instead of growing forever.
		n := copy(p.queue, p.queue[p.head:])
		clear(p.queue[n:])
		p.queue, p.head = p.queue[:n], 0
	}
	return m
}

// queue puts m in the pacer's queue (once) for whatever it has to send
// when its turn comes: a fresh MPSA_PUT or a retransmission. Call pace to
// send what the tokens allow.
func (s *Server) queue(m *ctlMember) {
	if m.queued {
		return
	}
	m.queued = true
	m.g.queued++
	s.pacer.push(m)
}

// pace sends for the members at the head of the queue while tokens last,
// skipping those with nothing left to send (gone, or answered meanwhile),
// and sets the pacer's deadline to the next token if members still wait.
func (s *Server) pace(now time.Time) {
	p := s.pacer
	p.refill(now)
	for p.waiting() > 0 {
		m := p.front()
		send := !m.gone && m.sendable(now)
		if send && !p.take() {
			s.sched.set(&p.wake, now.Add(p.untilToken()))
			return
		}
		p.pop()
		m.queued = false
		m.g.queued--
		if send {
			m.g.send(now, m)
		}
		if m.g.queued == 0 {
			m.g.put.zero() // no push of the group waits for it
		}
	}
	s.sched.stop(&p.wake)
}
