package server

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"
)

// groupJSON encodes g as the status socket does and decodes it as a
// generic object, to see which fields are there.
func groupJSON(t *testing.T, g GroupStatus) map[string]json.RawMessage {
	t.Helper()
	b, err := json.Marshal(Status{Groups: []GroupStatus{g}})
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Groups []map[string]json.RawMessage }
	if err := json.Unmarshal(b, &st); err != nil || len(st.Groups) != 1 {
		t.Fatalf("decode %s: %v", b, err)
	}
	return st.Groups[0]
}

// TestStatusJSONMemberFields: a member's group has outbound_spi and
// inbound_spis whether or not it holds an SA; a controller's never does.
func TestStatusJSONMemberFields(t *testing.T) {
	b := newBench(t)
	// The member before its control child is up: no SA.
	g := groupJSON(t, b.memStatus())
	if string(g["outbound_spi"]) != `""` || string(g["inbound_spis"]) != `[]` || string(g["spi"]) != `""` {
		t.Fatalf("member without an SA: outbound_spi %s, inbound_spis %s, spi %s; want \"\", [] and \"\"", g["outbound_spi"], g["inbound_spis"], g["spi"])
	}
	// A member status built by hand without the slice says [] all the same.
	g = groupJSON(t, GroupStatus{Name: "x", Controller: &PeerLink{State: "down"}})
	if string(g["outbound_spi"]) != `""` || string(g["inbound_spis"]) != `[]` {
		t.Fatalf("member group with nil InboundSPIs: %s %s", g["outbound_spi"], g["inbound_spis"])
	}
	if _, has := g["members"]; has {
		t.Fatal("member group has the controller's members field")
	}

	b.up()
	spi := spiString(b.ctlGroup().group.Current().SPI())
	ms := b.memStatus()
	g = groupJSON(t, ms)
	if string(g["outbound_spi"]) != `"`+spi+`"` || string(g["inbound_spis"]) != `["`+spi+`"]` {
		t.Fatalf("member with SA %s: outbound_spi %s, inbound_spis %s", spi, g["outbound_spi"], g["inbound_spis"])
	}
	// What the client decodes is what the member reported.
	raw, _ := json.Marshal(ms)
	var back GroupStatus
	if err := json.Unmarshal(raw, &back); err != nil || back.OutboundSPI != spi || !slices.Equal(back.InboundSPIs, ms.InboundSPIs) || !back.IsMember() {
		t.Fatalf("round trip: %+v (%v)", back, err)
	}

	cs := b.ctlStatus()
	if cs.IsMember() {
		t.Fatal("controller group reports as a member's")
	}
	g = groupJSON(t, cs)
	for _, k := range []string{"outbound_spi", "inbound_spis", "dataplane_drops", "controller"} {
		if _, has := g[k]; has {
			t.Errorf("controller group has %s: %s", k, g[k])
		}
	}
	if string(g["spi"]) != `"`+spi+`"` {
		t.Errorf("controller group spi %s, want %s", g["spi"], spi)
	}
}

// dropRecorder is a recorder whose data plane also counts drops.
type dropRecorder struct {
	*recorder
	counts map[string]uint64
}

func (d dropRecorder) DropCounts() map[string]uint64 { return maps.Clone(d.counts) }

// TestStatusDataPlaneDrops: a data plane that counts drops has them in the
// member's status as dataplane_drops; one that does not has no such field.
func TestStatusDataPlaneDrops(t *testing.T) {
	b := newBench(t)
	b.up()
	if g := groupJSON(t, b.memStatus()); g["dataplane_drops"] != nil {
		t.Fatalf("data plane without drop counters: dataplane_drops %s", g["dataplane_drops"])
	}
	b.mem.groups[0].(*memGroup).dp = dropRecorder{b.dp, map[string]uint64{"unknown_spi": 3, "no_outbound_sa": 0}}
	g := groupJSON(t, b.memStatus())
	var got map[string]uint64
	if err := json.Unmarshal(g["dataplane_drops"], &got); err != nil || got["unknown_spi"] != 3 || len(got) != 2 {
		t.Fatalf("dataplane_drops %s (%v)", g["dataplane_drops"], err)
	}
}
