package groupid

import "testing"

// TestMarksStable pins the marks derived from group names: a restarted
// mpsad, and mpsactl flush, find a group's kernel objects by them, so they
// may never change.
func TestMarksStable(t *testing.T) {
	for _, tt := range []struct {
		name                string
		reqID, prio, metric uint32
	}{
		{"east", 0x6d71723c, 74872, 1836151356},
		{"mgmt", 0x6d717efc, 81400, 1836154620},
		{"branch", 0x6d713945, 45706, 1836136773},
	} {
		id := Of(tt.name)
		if id.ReqID() != tt.reqID || id.Priority() != tt.prio || id.RouteMetric() != tt.metric {
			t.Errorf("%s: reqid %#x, priority %d, metric %d; want %#x, %d, %d", tt.name, id.ReqID(), id.Priority(), id.RouteMetric(), tt.reqID, tt.prio, tt.metric)
		}
	}
}

// TestEastAndMgmtDiffer: the two names that shared priority 7120 under
// the old 64-value scheme have distinct marks.
func TestEastAndMgmtDiffer(t *testing.T) {
	e, m := Of("east"), Of("mgmt")
	if e.Priority() == m.Priority() || e.Priority()+1 == m.Priority() || m.Priority()+1 == e.Priority() || e.ReqID() == m.ReqID() || e.RouteMetric() == m.RouteMetric() {
		t.Fatalf("east and mgmt share a mark: %v, %v", e, m)
	}
	if len(Collisions([]string{"east", "mgmt"})) != 0 {
		t.Fatal("east and mgmt reported as colliding")
	}
}

// TestMarksInRange: the priorities stay below charon's (hundreds of
// thousands) and each group's pair is disjoint from every other slot's.
func TestMarksInRange(t *testing.T) {
	last := ID{Slot: Slots - 1}
	if p := last.Priority() + 1; p >= 100000 {
		t.Errorf("highest priority %d is not well below charon's", p)
	}
	if Of("x").Priority()%2 != 0 {
		t.Error("a group's policy priority is odd: the pairs of two slots would overlap")
	}
}

func TestCollisions(t *testing.T) {
	// g0 and g620 hash to one slot.
	if Of("g0").Slot != Of("g620").Slot {
		t.Fatal("the test's colliding pair does not collide")
	}
	got := Collisions([]string{"g0", "east", "g620", "g0"})
	if len(got) != 1 || got[0].First != "g0" || got[0].Second != "g620" || got[0].Slot != Of("g0").Slot {
		t.Fatalf("got %+v, want one collision g0/g620", got)
	}
}
