package mpsa

import (
	"bytes"
	"testing"
	"time"
)

func pair() (member, controller *Session) {
	id := SessionID{SPIi: 0x1111, SPIr: 0x2222}
	b := Backoff{Initial: time.Second, Max: 8 * time.Second, Factor: 2}
	return NewSession(id, true, b), NewSession(id, false, b)
}

func mustParse(tb testing.TB, b []byte) *Message {
	tb.Helper()
	m, err := ParseMessage(b)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func mustMarshal(tb testing.TB, m *Message) []byte {
	tb.Helper()
	b, err := m.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestExchangeHelloAndPut runs the draft's flow between two sessions:
// hello and its answer, then MPSA_PUT and its empty response.
func TestExchangeHelloAndPut(t *testing.T) {
	mem, ctl := pair()
	hello, err := mem.Request(t0, MPSAVendorID())
	if err != nil {
		t.Fatal(err)
	}
	hm := mustParse(t, hello)
	if r := ctl.CheckHeader(hm.Header); r != "" {
		t.Fatalf("controller rejects the hello: %s", r)
	}
	if hm.Header.Flags != FlagInitiator || !hm.HasMPSAVendorID() {
		t.Fatalf("hello header %+v", hm.Header)
	}
	if in := ctl.Receive(hm); in.Kind != NewRequest {
		t.Fatalf("controller: %s", in.Kind)
	}
	ans, _ := ctl.Respond(MPSAVendorID())
	am := mustParse(t, ans)
	if am.Header.Flags != FlagResponse || am.Header.MessageID != hm.Header.MessageID {
		t.Fatalf("answer header %+v", am.Header)
	}
	if r := mem.CheckHeader(am.Header); r != "" {
		t.Fatalf("member rejects the answer: %s", r)
	}
	if in := mem.Receive(am); in.Kind != Response || mem.Outstanding() {
		t.Fatalf("member: %s, outstanding %v", in.Kind, mem.Outstanding())
	}

	n, _ := goldenPut().Notify()
	put, _ := ctl.Request(t0, n)
	pm := mustParse(t, put)
	if in := mem.Receive(pm); in.Kind != NewRequest {
		t.Fatalf("member: %s", in.Kind)
	}
	// The controller retransmits before the member answers.
	if in := mem.Receive(pm); in.Kind != RepeatedUnanswered {
		t.Fatalf("retransmission while handling: %s", in.Kind)
	}
	empty, _ := mem.Respond()
	em := mustParse(t, empty)
	if len(em.Payloads) != 0 || em.Header.Flags != FlagInitiator|FlagResponse {
		t.Fatalf("empty response %+v", em)
	}
	// A retransmission after the answer gets the cached answer.
	if in := mem.Receive(pm); in.Kind != RepeatedRequest || !bytes.Equal(in.Reply, empty) {
		t.Fatalf("retransmission after answer: %s", in.Kind)
	}
	if in := ctl.Receive(em); in.Kind != Response {
		t.Fatalf("controller: %s", in.Kind)
	}
	if in := ctl.Receive(em); in.Kind != StaleResponse {
		t.Fatalf("second response: %s", in.Kind)
	}
}

func TestExchangeRetransmitBackoff(t *testing.T) {
	mem, _ := pair()
	if _, ok := mem.Retransmit(t0); ok {
		t.Fatal("retransmit with nothing outstanding")
	}
	req, _ := mem.Request(t0, MPSAVendorID())
	var times []time.Duration
	now := t0
	for len(times) < 6 {
		d, ok := mem.NextDeadline()
		if !ok {
			t.Fatal("no deadline")
		}
		if b, ok := mem.Retransmit(d.Add(-time.Nanosecond)); ok {
			t.Fatalf("early retransmission %x", b)
		}
		b, ok := mem.Retransmit(d)
		if !ok || !bytes.Equal(b, req) {
			t.Fatal("retransmission differs from the request")
		}
		times = append(times, d.Sub(now))
		now = d
	}
	want := []time.Duration{1, 2, 4, 8, 8, 8}
	for i := range want {
		if times[i] != want[i]*time.Second {
			t.Fatalf("intervals %v, want %v seconds", times, want)
		}
	}
	if mem.Attempts() != 6 {
		t.Fatalf("attempts %d", mem.Attempts())
	}
}

// TestBackoffJitter: with jitter each interval is at most the schedule's
// and at least (1 - Jitter) of it, and sessions that sent together
// retransmit at different times.
func TestBackoffJitter(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 8 * time.Second, Factor: 2, Jitter: 0.25}
	firsts := map[time.Time]bool{}
	for range 20 {
		s := NewSession(SessionID{SPIi: 1, SPIr: 2}, true, b)
		s.Request(t0, MPSAVendorID())
		now := t0
		for attempt, want := range []time.Duration{1, 2, 4, 8, 8} {
			d, _ := s.NextDeadline()
			if attempt == 0 {
				firsts[d] = true
			}
			got, full := d.Sub(now), want*time.Second
			if got > full || got < full*3/4 {
				t.Fatalf("attempt %d: interval %v, want %v less up to 25 %%", attempt, got, full)
			}
			s.Retransmit(d)
			now = d
		}
	}
	if len(firsts) < 10 {
		t.Fatalf("20 sessions share %d first retransmission times: no jitter", len(firsts))
	}
}

// TestExchangeReplaceOutstanding: a rekey replaces an unanswered MPSA_PUT;
// the late answer to the old one is stale, the new one completes.
func TestExchangeReplaceOutstanding(t *testing.T) {
	mem, ctl := pair()
	n, _ := goldenPut().Notify()
	first, _ := ctl.Request(t0, n)
	second, _ := ctl.Request(t0, n)
	fm, sm := mustParse(t, first), mustParse(t, second)
	if sm.Header.MessageID != fm.Header.MessageID+1 {
		t.Fatal("message IDs do not count up")
	}
	mem.Receive(fm)
	r1, _ := mem.Respond()
	if in := mem.Receive(sm); in.Kind != NewRequest {
		t.Fatalf("second put: %s", in.Kind)
	}
	r2, _ := mem.Respond()
	if in := ctl.Receive(mustParse(t, r1)); in.Kind != StaleResponse {
		t.Fatalf("answer to the replaced request: %s", in.Kind)
	}
	if in := ctl.Receive(mustParse(t, r2)); in.Kind != Response {
		t.Fatalf("answer to the current request: %s", in.Kind)
	}
}

// TestExchangePeerRestart: a peer that restarted numbers from a new start;
// its first request is new even though the ID is lower.
func TestExchangePeerRestart(t *testing.T) {
	_, ctl := pair()
	for _, id := range []uint32{100, 101, 5} {
		b := mustMarshal(t, &Message{Header: Header{SPIi: 0x1111, SPIr: 0x2222, Exchange: 37, Flags: FlagInitiator, MessageID: id}, Payloads: []Payload{MPSAVendorID()}})
		if in := ctl.Receive(mustParse(t, b)); in.Kind != NewRequest {
			t.Fatalf("id %d: %s", id, in.Kind)
		}
		ctl.Respond(MPSAVendorID())
	}
}

func TestExchangeCheckHeader(t *testing.T) {
	mem, ctl := pair()
	good := Header{SPIi: 0x1111, SPIr: 0x2222, Exchange: 37, Flags: FlagInitiator}
	if r := ctl.CheckHeader(good); r != "" {
		t.Fatal(r)
	}
	for want, h := range map[string]Header{
		"exchange type":  {SPIi: 0x1111, SPIr: 0x2222, Exchange: 34, Flags: FlagInitiator},
		"IKE SPIs":       {SPIi: 0x1111, SPIr: 0x2223, Exchange: 37, Flags: FlagInitiator},
		"initiator flag": {SPIi: 0x1111, SPIr: 0x2222, Exchange: 37},
	} {
		if r := ctl.CheckHeader(h); r != want {
			t.Errorf("%+v: %q, want %q", h, r, want)
		}
	}
	// the member's view: the controller's messages carry no I flag
	if r := mem.CheckHeader(Header{SPIi: 0x1111, SPIr: 0x2222, Exchange: 37, Flags: FlagResponse}); r != "" {
		t.Fatal(r)
	}
	if _, err := mem.Respond(); err == nil {
		t.Fatal("respond with no request")
	}
}

// TestExchangeDiscard: a request that could not be carried out is handled
// anew when retransmitted; an answered one stays answered.
func TestExchangeDiscard(t *testing.T) {
	mem, ctl := pair()
	n, _ := goldenPut().Notify()
	put, _ := ctl.Request(t0, n)
	pm := mustParse(t, put)
	if in := mem.Receive(pm); in.Kind != NewRequest {
		t.Fatal(in.Kind)
	}
	mem.Discard()
	if in := mem.Receive(pm); in.Kind != NewRequest {
		t.Fatalf("retransmission after Discard: %s", in.Kind)
	}
	mem.Respond()
	mem.Discard() // no effect once answered
	if in := mem.Receive(pm); in.Kind != RepeatedRequest {
		t.Fatalf("retransmission after the answer: %s", in.Kind)
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{0: "invalid", NewRequest: "new request", StaleResponse: "stale response", StaleResponse + 1: "kind(6)", -1: "kind(-1)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d): %q, want %q", int(k), got, want)
		}
	}
}
