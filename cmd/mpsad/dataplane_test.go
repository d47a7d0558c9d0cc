package main

import "testing"

// TestGroupIDsStable pins the reqids and policy priorities derived from
// group names: a kernel data plane recognises its group's leftovers from
// an earlier run by them, so they may never change.
func TestGroupIDsStable(t *testing.T) {
	for _, tt := range []struct {
		name        string
		reqID, prio uint32
	}{
		{"branch", 1836081990, 7010},
		{"a", 1836081965, 7088},
		{"group-with-a-long-name", 1836081847, 7108},
	} {
		if r, p := groupReqID(tt.name), groupPriority(tt.name); r != tt.reqID || p != tt.prio {
			t.Errorf("group %q: reqid %d, priority %d; want %d, %d", tt.name, r, p, tt.reqID, tt.prio)
		}
	}
}
