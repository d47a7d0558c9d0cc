package api

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

type fakeAPI struct {
	st     Status
	rekeys []string
}

func (f *fakeAPI) Status(context.Context) (Status, error) { return f.st, nil }

func (f *fakeAPI) Rekey(_ context.Context, g string) (string, error) {
	if g != "branch" {
		return "", fmt.Errorf("group %q: %w", g, ErrNoGroup)
	}
	f.rekeys = append(f.rekeys, g)
	return "0x0000beef", nil
}

// TestServeAndClient: what the client decodes is what the API returned;
// a rekey reaches the API and its SPI comes back; an unknown group is an
// error that names it.
func TestServeAndClient(t *testing.T) {
	f := &fakeAPI{st: Status{Role: "controller", Version: "v", VICIConnected: true, Groups: []GroupStatus{
		{Name: "branch", SPI: "0x12345678", Members: []MemberStatus{{ID: "cpe1", Address: "10.98.1.1", AckedSPI: "0x12345678", IKE: 3}}},
	}}}
	path := filepath.Join(t.TempDir(), "mpsad.sock")
	ctx, cancel := context.WithCancel(context.Background())
	up, done := make(chan error, 1), make(chan error, 1)
	go func() { done <- Serve(ctx, path, f, up) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	if err := <-up; err != nil {
		t.Fatal(err)
	}
	c := NewClient(path)
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != "controller" || len(st.Groups) != 1 || len(st.Groups[0].Members) != 1 || st.Groups[0].Members[0].ID != "cpe1" || st.Groups[0].IsMember() {
		t.Fatalf("status %+v", st)
	}
	spi, err := c.Rekey(ctx, "branch")
	if err != nil || spi != "0x0000beef" || len(f.rekeys) != 1 {
		t.Fatalf("rekey: %q, %v (rekeys %v)", spi, err, f.rekeys)
	}
	if _, err := c.Rekey(ctx, "nope"); err == nil || !strings.Contains(err.Error(), `group "nope": no such group`) {
		t.Fatalf("rekey of an unknown group: %v", err)
	}
}

// TestMemberGroupJSON: a member's group has outbound_spi and inbound_spis
// even without an SA; a controller's has neither.
func TestMemberGroupJSON(t *testing.T) {
	fields := func(g GroupStatus) map[string]json.RawMessage {
		b, err := json.Marshal(g)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := fields(GroupStatus{Name: "g", Controller: &PeerLink{State: "down"}})
	if string(m["outbound_spi"]) != `""` || string(m["inbound_spis"]) != `[]` {
		t.Fatalf("member group without SA: %v", m)
	}
	c := fields(GroupStatus{Name: "g", SPI: "0x00001111", Members: []MemberStatus{}})
	for _, k := range []string{"outbound_spi", "inbound_spis", "controller"} {
		if _, ok := c[k]; ok {
			t.Errorf("controller group has %s", k)
		}
	}
}
