package server

import (
	"testing"

	"github.com/mpsa/mpsa/vici"
)

// TestInboxMergesWithoutLoss: updates the loop has not taken are merged
// by IKE SA, newest state last; a resync replaces what was pending; a
// disconnect is remembered even after the reconnect.
func TestInboxMergesWithoutLoss(t *testing.T) {
	in := newVICIInbox()
	ev := func(changed []vici.IKESA, removed ...uint32) vici.Update {
		return vici.Update{Cause: vici.CauseEvent, Snapshot: vici.Snapshot{Connected: true}, Changed: changed, Removed: removed}
	}
	sa := func(id uint32, state vici.IKEState) vici.IKESA { return vici.IKESA{UniqueID: id, State: state} }
	in.put(ev([]vici.IKESA{sa(1, vici.IKEConnecting)}))
	in.put(ev([]vici.IKESA{sa(2, vici.IKEEstablished)}))
	in.put(ev([]vici.IKESA{sa(1, vici.IKEEstablished)}))
	in.put(ev(nil, 2))
	b, ok := in.take()
	if !ok || !b.connected || b.lost || b.resync || len(b.changes) != 2 ||
		b.changes[1].sa.State != vici.IKEEstablished || !b.changes[2].removed {
		t.Fatalf("merged events: %+v", b)
	}
	in.done(b)
	if _, ok := in.take(); ok {
		t.Fatal("a batch without updates")
	}
	in.put(ev([]vici.IKESA{sa(3, vici.IKEEstablished)}))
	in.put(vici.Update{Cause: vici.CauseDisconnected})
	in.put(vici.Update{Cause: vici.CauseResync, Snapshot: vici.Snapshot{Connected: true}, Changed: []vici.IKESA{sa(4, vici.IKEEstablished)}})
	in.put(ev([]vici.IKESA{sa(5, vici.IKEEstablished)}))
	b, _ = in.take()
	if !b.lost || !b.connected || !b.resync || len(b.full) != 1 || b.full[0].UniqueID != 4 || len(b.changes) != 1 || b.changes[5].removed {
		t.Fatalf("disconnect, resync, event: %+v", b)
	}
	in.done(b)
	in.put(vici.Update{Cause: vici.CauseDisconnected})
	if b, _ = in.take(); !b.lost || b.connected || b.resync || len(b.changes) != 0 {
		t.Fatalf("a reused batch kept old state: %+v", b)
	}
}

// TestInboxForgetsCharonOfEndedSession: what charon said in a session
// that ended does not outlive it in a merged batch.
func TestInboxForgetsCharonOfEndedSession(t *testing.T) {
	in := newVICIInbox()
	old, cur := &vici.Charon{Plugins: []string{"charon"}}, &vici.Charon{Plugins: []string{"charon"}}
	connected := vici.Snapshot{Connected: true}
	in.put(vici.Update{Cause: vici.CauseEvent, Snapshot: connected, Charon: old})
	in.put(vici.Update{Cause: vici.CauseDisconnected})
	in.put(vici.Update{Cause: vici.CauseResync, Snapshot: connected}) // stats failed
	if b, _ := in.take(); !b.lost || b.charon != nil {
		t.Fatalf("lost %v, charon %p (the old session's is %p)", b.lost, b.charon, old)
	}
	in.put(vici.Update{Cause: vici.CauseDisconnected})
	in.put(vici.Update{Cause: vici.CauseResync, Snapshot: connected, Charon: cur})
	if b, _ := in.take(); !b.lost || b.charon != cur {
		t.Fatalf("lost %v, charon %p, want %p", b.lost, b.charon, cur)
	}
}
