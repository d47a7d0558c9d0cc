package mpsa

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"time"
)

// Backoff is the retransmission schedule of a request: the first
// retransmission after Initial, each later one Factor times longer, never
// more than Max apart, each interval shortened by a random fraction of up
// to Jitter of it. Requests are retransmitted until answered or replaced,
// for as long as the session lives.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
	Factor  float64
	// Jitter, from 0 (none) to 1, spreads requests that were sent
	// together (a rekey's pushes, every member's hello after the
	// controller's charon restarted) so that their retransmissions do
	// not stay in step. The longest interval stays Max.
	Jitter float64
}

// DefaultBackoff suits a control exchange inside a CHILD_SA: quick first
// retries, then one every 30 seconds at most, each interval 0-25 % shorter
// at random.
func DefaultBackoff() Backoff {
	return Backoff{Initial: time.Second, Max: 30 * time.Second, Factor: 2, Jitter: 0.25}
}

// delay is the interval before retransmission attempt+1, with jitter.
func (b Backoff) delay(attempt int) time.Duration {
	d := b.interval(attempt)
	if j := min(b.Jitter, 1); j > 0 {
		d -= time.Duration(mrand.Float64() * j * float64(d))
	}
	return d
}

func (b Backoff) interval(attempt int) time.Duration {
	d := float64(b.Initial)
	for range attempt {
		d *= b.Factor
		if d >= float64(b.Max) {
			return b.Max
		}
	}
	return time.Duration(d)
}

// SessionID names the IKE SA a control session runs under: its SPIs as
// charon reports them.
type SessionID struct {
	SPIi uint64
	SPIr uint64
}

// String writes the IKE SPIs as charon's logs do ("%016x_i %016x_r").
func (id SessionID) String() string { return fmt.Sprintf("%016x_i %016x_r", id.SPIi, id.SPIr) }

// Session is one side of the MPSA control exchange with one peer under one
// IKE SA: IKEv2 messages of exchange type INFORMATIONAL carried in UDP
// inside the control CHILD_SA (see docs/design.md). It numbers its own
// requests, retransmits the outstanding one with backoff, recognises
// responses to it, and answers a repeated request from the cached response
// without handing it up again. It is pure and not safe for concurrent use.
//
// Message IDs: each side numbers its requests from a random start, one up
// per request. A request whose ID equals the last one handled is a
// retransmission; any other ID is a new request (so a peer that restarted
// with a fresh counter is heard at once). Replays cannot reach a session:
// the control child's ESP authenticates and replay-protects every datagram.
type Session struct {
	id           SessionID
	ikeInitiator bool
	backoff      Backoff

	nextID uint32
	out    *outstanding

	haveLast bool
	lastID   uint32
	lastResp []byte
}

type outstanding struct {
	id      uint32
	msg     []byte
	attempt int
	due     time.Time
}

// NewSession starts a session. ikeInitiator tells whether this side
// initiated the IKE SA: its messages then carry the I flag.
func NewSession(id SessionID, ikeInitiator bool, b Backoff) *Session {
	var r [4]byte
	rand.Read(r[:])
	return &Session{id: id, ikeInitiator: ikeInitiator, backoff: b, nextID: binary.BigEndian.Uint32(r[:]) >> 1}
}

// ID is the IKE SA the session belongs to.
func (s *Session) ID() SessionID { return s.id }

func (s *Session) header(msgID uint32, response bool) Header {
	h := Header{SPIi: s.id.SPIi, SPIr: s.id.SPIr, Exchange: ExchangeInformational, MessageID: msgID}
	if s.ikeInitiator {
		h.Flags |= FlagInitiator
	}
	if response {
		h.Flags |= FlagResponse
	}
	return h
}

// Request encodes a new request with the payloads, makes it the outstanding
// one (replacing any unanswered request) and returns the datagram to send
// now.
func (s *Session) Request(now time.Time, payloads ...Payload) ([]byte, error) {
	id := s.nextID
	b, err := (&Message{Header: s.header(id, false), Payloads: payloads}).Marshal()
	if err != nil {
		return nil, fmt.Errorf("encode request %d: %w", id, err)
	}
	s.nextID++
	s.cancel()
	// The session keeps its own copy, zeroed when the request completes
	// or is replaced; the caller owns b.
	s.out = &outstanding{id: id, msg: append([]byte(nil), b...), due: now.Add(s.backoff.delay(0))}
	return b, nil
}

// Outstanding reports whether a request waits for its response.
func (s *Session) Outstanding() bool { return s.out != nil }

func (s *Session) cancel() {
	if s.out != nil {
		clear(s.out.msg) // may hold key material
		s.out = nil
	}
}

// Retransmit returns the outstanding request again if its timer has fired
// by now, and schedules the next retransmission. The returned buffer is the
// session's: send it before the next call on the session.
func (s *Session) Retransmit(now time.Time) ([]byte, bool) {
	if s.out == nil || now.Before(s.out.due) {
		return nil, false
	}
	s.out.attempt++
	s.out.due = now.Add(s.backoff.delay(s.out.attempt))
	return s.out.msg, true
}

// NextDeadline is when the outstanding request is retransmitted next.
func (s *Session) NextDeadline() (time.Time, bool) {
	if s.out == nil {
		return time.Time{}, false
	}
	return s.out.due, true
}

// Attempts is how often the outstanding request has been retransmitted.
func (s *Session) Attempts() int {
	if s.out == nil {
		return 0
	}
	return s.out.attempt
}

// Kind classifies a received message.
type Kind int

// Kinds of received messages.
const (
	// NewRequest must be handled and answered with Respond.
	NewRequest Kind = iota + 1
	// RepeatedRequest is a retransmission of the last request: send
	// Incoming.Reply again and do nothing else.
	RepeatedRequest
	// RepeatedUnanswered is a retransmission of a request still being
	// handled (Respond not called yet): ignore it.
	RepeatedUnanswered
	// Response answers the outstanding request, which is now complete.
	Response
	// StaleResponse answers no outstanding request: ignore it.
	StaleResponse
)

// String names the message kind.
func (k Kind) String() string {
	names := [...]string{"invalid", "new request", "repeated request", "repeated unanswered request", "response", "stale response"}
	if k >= 0 && int(k) < len(names) {
		return names[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Incoming is what Receive made of a message.
type Incoming struct {
	Kind Kind
	// Reply is the cached response for a RepeatedRequest; it is the
	// session's buffer: send it before the next call on the session.
	Reply []byte
}

// Receive classifies a message already decoded and checked to belong to
// this session (see CheckHeader).
func (s *Session) Receive(m *Message) Incoming {
	id := m.Header.MessageID
	if m.Header.IsResponse() {
		if s.out != nil && s.out.id == id {
			s.cancel()
			return Incoming{Kind: Response}
		}
		return Incoming{Kind: StaleResponse}
	}
	if s.haveLast && id == s.lastID {
		if s.lastResp == nil {
			return Incoming{Kind: RepeatedUnanswered}
		}
		return Incoming{Kind: RepeatedRequest, Reply: s.lastResp}
	}
	clear(s.lastResp)
	s.haveLast, s.lastID, s.lastResp = true, id, nil
	return Incoming{Kind: NewRequest}
}

// Respond encodes the response to the last new request, caches it for
// retransmissions of that request, and returns it.
func (s *Session) Respond(payloads ...Payload) ([]byte, error) {
	if !s.haveLast {
		return nil, fmt.Errorf("no request to respond to")
	}
	b, err := (&Message{Header: s.header(s.lastID, true), Payloads: payloads}).Marshal()
	if err != nil {
		return nil, fmt.Errorf("encode response %d: %w", s.lastID, err)
	}
	clear(s.lastResp)
	s.lastResp = append([]byte(nil), b...)
	return b, nil
}

// Discard forgets the last new request without answering it, so that its
// retransmission is handled as new: for a request that could not be
// carried out (an SA the data plane failed to install) and should be tried
// again when the peer retransmits.
func (s *Session) Discard() {
	if s.lastResp == nil {
		s.haveLast = false
	}
}

// CheckHeader checks that a message belongs to the session: INFORMATIONAL,
// the session's IKE SPIs, and the I flag of the peer (set when the peer,
// not this side, initiated the IKE SA). It returns a reason for the drop
// counters, or "" when the message belongs.
func (s *Session) CheckHeader(h Header) string {
	switch {
	case h.Exchange != ExchangeInformational:
		return "exchange type"
	case h.SPIi != s.id.SPIi || h.SPIr != s.id.SPIr:
		return "IKE SPIs"
	case (h.Flags&FlagInitiator != 0) == s.ikeInitiator:
		return "initiator flag"
	}
	return ""
}

// Close forgets the session's state, zeroing cached messages.
func (s *Session) Close() {
	s.cancel()
	clear(s.lastResp)
	s.lastResp = nil
}
