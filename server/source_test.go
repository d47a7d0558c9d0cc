package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/mpsa/mpsa/api"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/vici"
	"github.com/mpsa/mpsa/xfrm"
)

// feedRecorder is a group that records what sources feed it: the
// control children in calls, every other call in others.
type feedRecorder struct {
	cfg    *swanctl.Group
	calls  []string
	others []string
	// up are the control children it was told of, by IKE SA.
	up map[uint32]netip.Addr
}

func (r *feedRecorder) config() *swanctl.Group { return r.cfg }
func (r *feedRecorder) view() (bgpView, bool)  { return bgpView{}, false }
func (r *feedRecorder) controlUp(_ context.Context, _ time.Time, c proven) {
	r.calls = append(r.calls, fmt.Sprintf("up %d %s", c.IKE.UniqueID, c.Remote))
	if r.up == nil {
		r.up = map[uint32]netip.Addr{}
	}
	r.up[c.IKE.UniqueID] = c.Remote
}
func (r *feedRecorder) controlRefused(_ time.Time, sa vici.IKESA, why string) {
	r.calls = append(r.calls, fmt.Sprintf("refused %d: %s", sa.UniqueID, why))
}
func (r *feedRecorder) controlDown(_ context.Context, _ time.Time, ike uint32, remote netip.Addr) {
	r.calls = append(r.calls, fmt.Sprintf("down %d %s", ike, remote))
	if r.up[ike] == remote {
		delete(r.up, ike)
	}
}
func (r *feedRecorder) controlMissing(_ context.Context, _ time.Time, sa vici.IKESA) {
	r.calls = append(r.calls, fmt.Sprintf("missing %d", sa.UniqueID))
}
func (r *feedRecorder) uses(ike uint32, remote netip.Addr) bool {
	a, ok := r.up[ike]
	return ok && a == remote
}
func (r *feedRecorder) controlFine(ike uint32, gone bool) {
	r.others = append(r.others, fmt.Sprintf("fine %d %v", ike, gone))
}
func (r *feedRecorder) charonSaid(time.Time, vici.LogEvent)                  {}
func (r *feedRecorder) charonChanged(*vici.Charon)                           {}
func (r *feedRecorder) setPeers(context.Context, string, []xfrm.Peer)        {}
func (r *feedRecorder) onDatagram(context.Context, time.Time, Datagram) bool { return false }
func (r *feedRecorder) reconfigure(context.Context, *swanctl.Group) bool     { return true }
func (r *feedRecorder) status(context.Context) api.GroupStatus               { return api.GroupStatus{} }
func (r *feedRecorder) retire(context.Context, *swanctl.Group)               {}
func (r *feedRecorder) close()                                               {}
func (r *feedRecorder) take() []string                                       { c := r.calls; r.calls = nil; return c }

// TestVICISourceFeedsWhatChanged: the VICI source tells a group of the
// control children of its connection only, downs a control child that is
// no longer installed or moved to another address, and in a resync tells
// of the new IKE SA of a reconnected member before the old one goes.
func TestVICISourceFeedsWhatChanged(t *testing.T) {
	g := &feedRecorder{cfg: &swanctl.Group{Connection: "c", ControlChild: "ctl"}}
	v := newVICISource(func(conn string) []group {
		if conn == "c" {
			return []group{g}
		}
		return nil
	}, trust)
	ctx, now := context.Background(), time.Now()
	expect := func(what string, want ...string) {
		t.Helper()
		if got := g.take(); !slices.Equal(got, want) {
			t.Fatalf("%s: %q, want %q", what, got, want)
		}
	}
	a, b := fleetSA(0), fleetSA(1)
	other := fleetSA(2)
	other.Conn = "d"
	v.set(ctx, now, a)
	v.set(ctx, now, other)
	expect("two IKE SAs, one of the group's connection", "up 1 "+memberAddr(0).String())

	rekeying := a
	rekeying.Children = []vici.ChildSA{a.Children[0]}
	rekeying.Children[0].State = vici.ChildRekeying
	v.set(ctx, now, rekeying)
	expect("control child no longer installed", "down 1 "+memberAddr(0).String(), "missing 1")

	moved := a
	moved.Children = []vici.ChildSA{a.Children[0]}
	moved.Children[0].RemoteTS = []netip.Prefix{netip.PrefixFrom(memberAddr(9), 32)}
	v.set(ctx, now, a)
	v.set(ctx, now, moved)
	// The old child goes before the new one comes: a member group keeps
	// one link per IKE SA.
	expect("moved to another address", "up 1 "+memberAddr(0).String(), "down 1 "+memberAddr(0).String(), "up 1 "+memberAddr(9).String())

	// Member 0 reconnected while the watcher was away: IKE SA 1 is gone,
	// IKE SA 7 has its control child; member 1 came up.
	v.set(ctx, now, a)
	g.take()
	again := a
	again.UniqueID = 7
	v.resync(ctx, now, []vici.IKESA{again, b, other})
	got := g.take()
	slices.Sort(got[:2])
	want := []string{"up 2 " + memberAddr(1).String(), "up 7 " + memberAddr(0).String(), "down 1 " + memberAddr(0).String()}
	if !slices.Equal(got, want) {
		t.Fatalf("resync: %q, want %q (ups before downs)", got, want)
	}
	v.remove(ctx, now, 2)
	v.remove(ctx, now, 3)
	expect("removed", "down 2 "+memberAddr(1).String())

	h := &feedRecorder{cfg: &swanctl.Group{Connection: "c", ControlChild: "ctl"}}
	v.feed(ctx, now, h)
	if got := h.take(); !slices.Equal(got, []string{"up 7 " + memberAddr(0).String()}) {
		t.Fatalf("a group set up later is fed %q", got)
	}
}

// trust is a VICI source's verification that proves every control child.
func trust(_ context.Context, c vici.Control) (proven, error) { return proven{Control: c}, nil }

// TestVICISourceVerifies: a control child is verified once, not again for
// an event or a resync that leaves it unchanged, again when it changes or
// charon does; a child that fails verification is refused, never up, and
// one that was up goes down first.
func TestVICISourceVerifies(t *testing.T) {
	g := &feedRecorder{cfg: &swanctl.Group{Connection: "c", ControlChild: "ctl"}}
	var verified []uint32
	refuse := map[uint32]bool{}
	v := newVICISource(func(string) []group { return []group{g} }, func(_ context.Context, c vici.Control) (proven, error) {
		verified = append(verified, c.Child.UniqueID)
		if refuse[c.Child.UniqueID] {
			return proven{}, errors.New("no inbound XFRM policy")
		}
		return proven{Control: c, admission: admission{ifIndex: 3}}, nil
	})
	ctx, now := context.Background(), time.Now()
	a := fleetSA(0)
	v.set(ctx, now, a)
	v.set(ctx, now, a) // an event that changes nothing of the child
	v.resync(ctx, now, []vici.IKESA{a})
	if len(verified) != 1 {
		t.Fatalf("verified %d times, want once: %v", len(verified), verified)
	}
	rekeyed := a
	rekeyed.Children = []vici.ChildSA{a.Children[0]}
	rekeyed.Children[0].UniqueID, rekeyed.Children[0].SPIIn = 99, 0x1234
	refuse[99] = true
	g.take()
	v.set(ctx, now, rekeyed)
	if got := g.take(); len(got) != 2 || got[0] != "down 1 "+memberAddr(0).String() || got[1] != "refused 1: no inbound XFRM policy" {
		t.Fatalf("child rekeyed into one that fails verification: %q", got)
	}
	v.forgetProofs()
	v.set(ctx, now, a)
	if len(verified) != 3 {
		t.Fatalf("after charon changed: verified %v, want the child again", verified)
	}
}

// TestVICISourceResyncUnchanged: a resync that lists the same IKE SAs
// (only their age changed) calls no group method; one whose control
// child was refused is verified and told again (how a route fixed by
// hand is noticed), and one whose IKE SA changed is told again.
func TestVICISourceResyncUnchanged(t *testing.T) {
	g := &feedRecorder{cfg: &swanctl.Group{Connection: "c", ControlChild: "ctl"}}
	refuse := map[uint32]bool{}
	verified := 0
	v := newVICISource(func(string) []group { return []group{g} }, func(_ context.Context, c vici.Control) (proven, error) {
		verified++
		if refuse[c.Child.UniqueID] {
			return proven{}, errors.New("no inbound XFRM policy")
		}
		return proven{Control: c}, nil
	})
	ctx, now := context.Background(), time.Now()
	var sas []vici.IKESA
	for i := range 3 {
		sas = append(sas, fleetSA(i))
	}
	refuse[sas[2].Children[0].UniqueID] = true
	v.resync(ctx, now, sas)
	g.take()
	g.others = nil
	verified = 0
	for i := range sas {
		sas[i].Established += time.Minute
	}
	v.resync(ctx, now, sas)
	want := []string{"refused 3: no inbound XFRM policy"}
	if got := g.take(); !slices.Equal(got, want) || len(g.others) != 0 || verified != 1 {
		t.Fatalf("unchanged resync: told %q and %q, verified %d; want %q and only the refused child verified", got, g.others, verified, want)
	}
	// Another IKE SA for the same child (MOBIKE moved it): told again.
	sas[0].RemoteHost = netip.MustParseAddr("192.0.2.99")
	v.resync(ctx, now, sas)
	if got := g.take(); len(got) != 2 || got[0] != "up 1 "+memberAddr(0).String() {
		t.Fatalf("IKE SA moved: told %q", got)
	}
}

// TestSameIKEComparesEveryField: sameIKE tells IKE SAs apart by every
// field but their age and children, including fields added to vici.IKESA
// later.
func TestSameIKEComparesEveryField(t *testing.T) {
	base := fleetSA(0)
	typ := reflect.TypeOf(base)
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		changed := base
		f := reflect.ValueOf(&changed).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(f.String() + "x")
		case reflect.Bool:
			f.SetBool(!f.Bool())
		case reflect.Int, reflect.Int64:
			f.SetInt(f.Int() + 1)
		case reflect.Uint16, reflect.Uint32, reflect.Uint64:
			f.SetUint(f.Uint() + 1)
		case reflect.Slice:
			f.Set(reflect.Zero(f.Type()))
		case reflect.Struct: // netip.Addr
			f.Set(reflect.ValueOf(netip.MustParseAddr("203.0.113.99")))
		default:
			t.Fatalf("field %s of kind %s: teach this test to change it", name, f.Kind())
		}
		same := name == "Established" || name == "Children"
		if got := sameIKE(&base, &changed); got != same {
			t.Errorf("%s changed: sameIKE %v, want %v", name, got, same)
		}
	}
}

// TestVICISourceProofsGoWithIKESA: the proofs of an IKE SA go with it,
// even those of a control child the configuration no longer names (a
// reload renamed control_child) or of a group removed since.
func TestVICISourceProofsGoWithIKESA(t *testing.T) {
	g := &feedRecorder{cfg: &swanctl.Group{Connection: "c", ControlChild: "ctl"}}
	groups := []group{g}
	v := newVICISource(func(string) []group { return groups }, trust)
	ctx, now := context.Background(), time.Now()
	a, b := fleetSA(0), fleetSA(1)
	v.set(ctx, now, a)
	v.set(ctx, now, b)
	if len(v.proofs) != 2 {
		t.Fatalf("%d IKE SAs with proofs, want 2", len(v.proofs))
	}
	g.cfg = &swanctl.Group{Connection: "c", ControlChild: "renamed"}
	v.remove(ctx, now, a.UniqueID)
	groups = nil
	v.remove(ctx, now, b.UniqueID)
	if len(v.proofs) != 0 {
		t.Fatalf("proofs kept for IKE SAs gone: %v", v.proofs)
	}
}
