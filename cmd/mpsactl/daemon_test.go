package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/api"
)

// staticAPI is a status source for testing the socket protocol and the
// printing; the daemon's own status is tested end to end in test/e2e.
type staticAPI struct {
	st     api.Status
	rekeys []string
}

func (a *staticAPI) Status(context.Context) (api.Status, error) { return a.st, nil }

func (a *staticAPI) Rekey(_ context.Context, g string) (string, error) {
	for _, gs := range a.st.Groups {
		if gs.Name == g {
			a.rekeys = append(a.rekeys, g)
			return "0x0000beef", nil
		}
	}
	return "", fmt.Errorf("group %q: %w", g, api.ErrNoGroup)
}

func serve(t *testing.T, impl api.API) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "mpsad.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// up reports when the socket listens: from then on connections queue
	// until the server accepts them, so no polling is needed.
	up := make(chan error, 1)
	go func() { done <- api.Serve(ctx, path, impl, up) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeStatus: %v", err)
		}
	})
	if err := <-up; err != nil {
		t.Fatalf("status socket: %v", err)
	}
	return path
}

func TestStatusJSONController(t *testing.T) {
	fake := &staticAPI{st: api.Status{Role: "controller", Version: "test", VICIConnected: true, Groups: []api.GroupStatus{
		{Name: "branch", SPI: "0x12345678", Members: []api.MemberStatus{{ID: "cpe1", Address: "10.98.1.1", AckedSPI: "0x12345678", IKE: 3}},
			Fanout: &api.FanoutStatus{Members: 1, Current: 1, WindowSeconds: 30, Warning: "too many members"}},
		{Name: "empty", SPI: "0x0badf00d", Members: []api.MemberStatus{}, Fanout: &api.FanoutStatus{WindowSeconds: 30}},
	}}}
	sock := serve(t, fake)
	code, out, errs := mpsactl(t, nil, "status", "--json", "--socket", sock)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var got struct {
		Role   string
		Groups []map[string]json.RawMessage
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if got.Role != "controller" || len(got.Groups) != 2 {
		t.Fatalf("output %s", out)
	}
	var members []api.MemberStatus
	json.Unmarshal(got.Groups[0]["members"], &members)
	if string(got.Groups[0]["spi"]) != `"0x12345678"` || len(members) != 1 || members[0].AckedSPI != "0x12345678" || members[0].ID != "cpe1" {
		t.Fatalf("group %s", out)
	}
	if string(got.Groups[1]["members"]) != "[]" {
		t.Fatalf("a controller group with no member must still list members: %s", got.Groups[1]["members"])
	}
	if _, has := got.Groups[0]["outbound_spi"]; has {
		t.Fatal("controller group has member fields")
	}
	code, out, _ = mpsactl(t, nil, "status", "--socket", sock)
	if code != 0 || !strings.Contains(out, "  1 of 1 have the current SA, 0 pushes waiting; a push to all takes 0s at push_rate (rollover window 30s)\n") ||
		!strings.Contains(out, "  WARNING: too many members\n") || strings.Count(out, "WARNING") != 1 {
		t.Fatalf("status: %d %q", code, out)
	}
	code, out, _ = mpsactl(t, nil, "members", "branch", "--socket", sock)
	if code != 0 || !strings.Contains(out, "cpe1") || !strings.Contains(out, "10.98.1.1") {
		t.Fatalf("members: %d %q", code, out)
	}
	code, out, _ = mpsactl(t, nil, "rekey", "branch", "--socket", sock)
	if code != 0 || !strings.Contains(out, "new SPI 0x0000beef") || len(fake.rekeys) != 1 {
		t.Fatalf("rekey: %d %q %v", code, out, fake.rekeys)
	}
	code, out, _ = mpsactl(t, nil, "rekey", "branch", "--json", "--socket", sock)
	var rk map[string]string
	if err := json.Unmarshal([]byte(out), &rk); code != 0 || err != nil || rk["group"] != "branch" || rk["spi"] != "0x0000beef" {
		t.Fatalf("rekey --json: %d %q (%v)", code, out, err)
	}
	code, _, errs = mpsactl(t, nil, "rekey", "nope", "--socket", sock)
	if code != 1 || !strings.Contains(errs, `group "nope": no such group`) {
		t.Fatalf("rekey of unknown group: %d %q", code, errs)
	}
	code, _, errs = mpsactl(t, nil, "members", "nope", "--socket", sock)
	if code != 1 || !strings.Contains(errs, "groups: branch, empty") {
		t.Fatalf("members of unknown group: %d %q", code, errs)
	}
}

func TestStatusMemberTables(t *testing.T) {
	exp := time.Now().Add(time.Hour)
	fake := &staticAPI{st: api.Status{Role: "member", Version: "test", VICIConnected: false, Groups: []api.GroupStatus{{
		Name: "branch", SPI: "0x00001111", OutboundSPI: "0x00001111", InboundSPIs: []string{"0x00001111", "0x00002222"},
		SAs:            []api.SAStatus{{SPI: "0x00001111", Expires: exp}, {SPI: "0x00002222", Expires: exp}},
		Controller:     &api.PeerLink{Address: "10.98.0.1", State: "up"},
		Peers:          []api.Peer{{Prefix: "10.2.0.0/24", Underlay: "192.0.2.2"}},
		Counters:       []api.Counter{{SPI: "0x00001111", InPackets: 5, OutPackets: 7}},
		DataPlaneDrops: map[string]uint64{"unknown_spi": 3, "no_route": 0, "malformed": 1},
		Drops:          map[string]uint64{"spi_mismatch": 2, "malformed": 1},
	}}}}
	sock := serve(t, fake)
	code, out, _ := mpsactl(t, nil, "status", "--socket", sock)
	for _, want := range []string{"role member, charon NOT connected", "group branch: SPI 0x00001111", "controller 10.98.0.1: up", "inbound 0x00001111 0x00002222", "1 peer prefixes",
		"packets dropped by the data plane: malformed=1 unknown_spi=3\n", "dropped control datagrams: malformed=1 spi_mismatch=2\n"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("status output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = mpsactl(t, nil, "peers", "branch", "--socket", sock)
	if code != 0 || !strings.Contains(out, "10.2.0.0/24  192.0.2.2") {
		t.Fatalf("peers: %q", out)
	}
	code, _, errs := mpsactl(t, nil, "members", "branch", "--socket", sock)
	if code != 1 || !strings.Contains(errs, "members are known to the controller") {
		t.Fatalf("members on a member: %d %q", code, errs)
	}
}

func TestStatusNoDaemon(t *testing.T) {
	code, _, errs := mpsactl(t, nil, "status", "--socket", filepath.Join(t.TempDir(), "none.sock"))
	if code != 1 || !strings.Contains(errs, "none.sock") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	if code, _, _ := mpsactl(t, nil, "members"); code != 2 {
		t.Fatal("members without a group accepted")
	}
}

// routesAPI is staticAPI with the routes of each group.
type routesAPI struct {
	staticAPI
	routes map[string]api.Routes
}

func (a *routesAPI) Routes(_ context.Context, g string) (api.Routes, error) {
	if r, ok := a.routes[g]; ok {
		return r, nil
	}
	return api.Routes{}, fmt.Errorf("group %q: %w", g, api.ErrNoGroup)
}

// TestRoutes: `mpsactl routes GROUP` prints a member's routes with their
// origin, peer, age and state, and a controller's members with each
// prefix's verdict; --json prints the daemon's answer as it is.
func TestRoutes(t *testing.T) {
	since := time.Now().Add(-90 * time.Second)
	fake := &routesAPI{routes: map[string]api.Routes{
		"m": {Group: "m", Role: "member", BGP: true,
			Session: &api.BGPSession{Controller: "10.98.0.1", State: "established", Since: &since, Advertised: []api.Advertised{{Prefix: "10.1.1.0/24", NextHop: "192.0.2.11"}}},
			Routes: []api.Route{
				{Prefix: "10.1.2.0/24", Peer: "192.0.2.12", Origin: "static", Since: since, AgeSeconds: 90},
				{Prefix: "10.1.2.0/24", Peer: "192.0.2.99", Origin: "bgp", Since: since, AgeSeconds: 90, Shadowed: true},
				{Prefix: "10.1.3.0/24", Peer: "192.0.2.13", Origin: "bgp", Since: since, AgeSeconds: 61, Stale: true},
			}},
		"c": {Group: "c", Role: "controller", BGP: true, Reflector: &api.Reflector{RouterID: "10.98.0.1", Port: 179, Interface: "ipsec0", RejectedTotal: 2,
			Members: []api.ReflectorMember{{Identity: "cpe-3.example.net", Address: "10.98.3.1", Session: "established", Since: since, Policy: []string{"cpe3"},
				Accepted: []api.PrefixVerdict{{Prefix: "10.1.3.0/24", NextHop: "192.0.2.13", Since: since, Rule: "cpe3"}},
				Rejected: []api.PrefixVerdict{{Prefix: "0.0.0.0/0", NextHop: "192.0.2.13", Since: since, Reason: "0.0.0.0/0 is outside the prefixes of policy cpe3"}}}}}},
	}}
	sock := serve(t, fake)
	code, out, errs := mpsactl(t, nil, "routes", "m", "--socket", sock)
	for _, want := range []string{
		"group m: BGP session established with 10.98.0.1 since ", "; advertising 10.1.1.0/24 via 192.0.2.11\n",
		"10.1.2.0/24  192.0.2.12  static  1m30s  used\n", "10.1.2.0/24  192.0.2.99  bgp     1m30s  shadowed by the static route\n",
		"10.1.3.0/24  192.0.2.13  bgp     1m1s   used, stale\n",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("routes m: exit %d %s, output lacks %q:\n%s", code, errs, want, out)
		}
	}
	code, out, _ = mpsactl(t, nil, "routes", "c", "--socket", sock)
	for _, want := range []string{
		"route reflector 10.98.0.1 on port 179 (interface ipsec0), 1 members, 0 prefixes accepted and 2 rejected in all",
		"member cpe-3.example.net (10.98.3.1): session established since", "policy cpe3",
		"10.1.3.0/24  192.0.2.13  accepted  1m30s  cpe3", "0.0.0.0/0    192.0.2.13  REJECTED  1m30s  0.0.0.0/0 is outside the prefixes of policy cpe3",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("routes c: exit %d, output lacks %q:\n%s", code, want, out)
		}
	}
	code, out, _ = mpsactl(t, nil, "routes", "c", "--json", "--socket", sock)
	var got api.Routes
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got.Reflector == nil || got.Reflector.Members[0].Rejected[0].Prefix != "0.0.0.0/0" {
		t.Errorf("routes --json: exit %d %v %s", code, err, out)
	}
	if code, _, errs := mpsactl(t, nil, "routes", "nope", "--socket", sock); code != 1 || !strings.Contains(errs, "no such group") {
		t.Errorf("routes of an unknown group: exit %d %q", code, errs)
	}
}
