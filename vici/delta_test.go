package vici

import (
	"fmt"
	"reflect"
	"testing"
)

// TestDeltaFollowsState: a consumer that applies only the Changed and
// Removed of each update (as the engine does with OmitSnapshots) holds
// the watcher's state after every event of the captured sequence, while
// OnUpdate never gets the snapshot's IKE SAs and Snapshot still returns
// them whole.
func TestDeltaFollowsState(t *testing.T) {
	var got []Update
	w := NewWatcher(WatcherOptions{Socket: "/nonexistent", OmitSnapshots: true, OnUpdate: func(u Update) { got = append(got, u) }})
	mirror := map[uint32]IKESA{}
	follow := func(u Update) {
		if u.Cause == CauseResync {
			clear(mirror)
		}
		for _, sa := range u.Changed {
			mirror[sa.UniqueID] = sa
		}
		for _, id := range u.Removed {
			delete(mirror, id)
		}
	}
	event := func(name, file string) Event {
		ev, err := ParseEvent(name, load(t, file))
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	listed, err := ParseSA(load(t, "list-sa-controller.json"))
	if err != nil {
		t.Fatal(err)
	}
	crk := event(EventChildRekey, "child-rekey-controller.json")
	crk.OldChild.UniqueID = listed.Children[0].UniqueID // captured in another run: same ids
	// The watcher's own steps (Run calls them for a listing and for each
	// event).
	steps := []func(){func() { w.resynced([]IKESA{listed}, nil) }}
	for _, ev := range []Event{
		event(EventIKEUpdown, "ike-updown-up.json"),
		event(EventChildUpdown, "child-updown-up.json"),
		crk,
		event(EventIKERekey, "ike-rekey-controller.json"),
		event(EventChildUpdown, "child-updown-down.json"),
		event(EventIKEUpdown, "ike-updown-down.json"),
	} {
		steps = append(steps, func() {
			if !w.applyEvent(ev, nil) {
				t.Fatalf("%s not applied", ev.Kind)
			}
		})
	}
	for i, step := range steps {
		step()
		u := got[len(got)-1]
		if u.Snapshot.IKESAs != nil || !u.Snapshot.Connected {
			t.Fatalf("step %d: OnUpdate got snapshot %+v, want only Connected", i, u.Snapshot)
		}
		follow(u)
		whole := w.Snapshot()
		if len(whole.IKESAs) != len(w.st) {
			t.Fatalf("step %d: Snapshot has %d IKE SAs, the state %d", i, len(whole.IKESAs), len(w.st))
		}
		if !reflect.DeepEqual(mirror, map[uint32]IKESA(w.st)) {
			t.Fatalf("step %d (%s): the deltas give\n%s\nthe state is\n%s", i, u.Cause, dump(mirror), dump(w.st))
		}
		if w.Last().Seq != uint64(i+1) || w.Last().Snapshot.IKESAs == nil {
			t.Fatalf("step %d: Last %+v", i, w.Last())
		}
	}
}

func dump(m map[uint32]IKESA) string {
	s := ""
	for id, sa := range m {
		s += fmt.Sprintf("%d: %s %d children\n", id, sa.State, len(sa.Children))
	}
	return s
}
