package scale

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/mpsa/mpsa/internal/metrics"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/xfrm"
)

// Op is a data-plane call that the Recorder records.
type Op string

// The recorded calls.
const (
	OpInstall  Op = "install"
	OpOutbound Op = "outbound"
	OpRemove   Op = "remove"
)

// Call is one recorded data-plane call of a member group.
type Call struct {
	Op Op `json:"op"`
	// SPI is "0x%08x", as in mpsad's status.
	SPI string `json:"spi"`
	// At is when the engine made the call; the member acknowledges an
	// MPSA_PUT right after installing its SA.
	At time.Time `json:"at"`
	// Err is the error returned, if any (the calls are checked as a real
	// backend checks them).
	Err string `json:"err,omitempty"`
}

// GroupRecord is what one member group did to its data plane.
type GroupRecord struct {
	// Underlay is the address the engine built the data plane for.
	Underlay netip.Addr `json:"underlay"`
	Calls    []Call     `json:"calls"`
	// Inbound are the SPIs installed now, in SPI order.
	Inbound []string `json:"inbound"`
	// Outbound is the SPI sent with now, "" before the first.
	Outbound string `json:"outbound"`
	// Closed is set once the engine closed the data plane.
	Closed bool `json:"closed,omitempty"`
}

// Installed returns when the group installed spi, and whether it did.
func (g GroupRecord) Installed(spi string) (time.Time, bool) {
	for _, c := range g.Calls {
		if c.Op == OpInstall && c.SPI == spi && c.Err == "" {
			return c.At, true
		}
	}
	return time.Time{}, false
}

// Record is the load generator's record of every member group.
type Record struct {
	Groups map[string]GroupRecord `json:"groups"`
	// KeySets counts, per SPI, the distinct sets of keys installed under
	// it across all groups: 1 when every member derived the same keys.
	// The keys themselves, or anything derived from them, never leave
	// the recorder.
	KeySets map[string]int `json:"key_sets"`
}

// Recorder is the load generator's data plane: one recording data plane
// per member group, which checks and records the calls of the SA
// lifecycle and touches no kernel. Its NewDataPlane is a
// server.DataPlaneFactory.
type Recorder struct {
	now func() time.Time

	mu     sync.Mutex
	groups map[string]*GroupRecord
	// keys holds a digest of each key set installed, per SPI, only to
	// count the distinct ones.
	keys map[uint32]map[[sha256.Size]byte]struct{}
	// installed holds, per SPI, the groups that installed it and when
	// the last of them did; changed is closed and replaced at every
	// install, for WaitInstalled.
	installed map[uint32]*installs
	changed   chan struct{}
}

type installs struct {
	groups map[string]bool
	last   time.Time
}

// NewRecorder returns an empty recorder reading the clock now (time.Now if
// nil).
func NewRecorder(now func() time.Time) *Recorder {
	if now == nil {
		now = time.Now
	}
	return &Recorder{now: now, groups: map[string]*GroupRecord{}, keys: map[uint32]map[[sha256.Size]byte]struct{}{},
		installed: map[uint32]*installs{}, changed: make(chan struct{})}
}

// NewDataPlane builds the recording data plane of group g.
func (r *Recorder) NewDataPlane(_ context.Context, g *swanctl.Group, local netip.Addr, _ *slog.Logger) (xfrm.DataPlane, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec, ok := r.groups[g.Name]; ok && !rec.Closed {
		return nil, fmt.Errorf("group %s: a data plane is open already", g.Name)
	}
	r.groups[g.Name] = &GroupRecord{Underlay: local}
	return &recordingDP{r: r, group: g.Name, inbound: map[uint32]bool{}}, nil
}

// Snapshot returns a copy of the record.
func (r *Recorder) Snapshot() Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := Record{Groups: make(map[string]GroupRecord, len(r.groups)), KeySets: map[string]int{}}
	for name, g := range r.groups {
		c := *g
		c.Calls = slices.Clone(g.Calls)
		c.Inbound = slices.Clone(g.Inbound)
		rec.Groups[name] = c
	}
	for spi, sets := range r.keys {
		rec.KeySets[metrics.SPIString(spi)] = len(sets)
	}
	return rec
}

// WaitInstalled waits until n groups have installed spi, or ctx is done,
// and returns how many have and when the last of them did.
func (r *Recorder) WaitInstalled(ctx context.Context, spi uint32, n int) (int, time.Time, error) {
	for {
		r.mu.Lock()
		got, last, ch := 0, time.Time{}, r.changed
		if in := r.installed[spi]; in != nil {
			got, last = len(in.groups), in.last
		}
		r.mu.Unlock()
		if got >= n {
			return got, last, nil
		}
		select {
		case <-ctx.Done():
			return got, last, ctx.Err()
		case <-ch:
		}
	}
}

// recordingDP is one group's data plane.
type recordingDP struct {
	r     *Recorder
	group string
	// inbound and outbound are guarded by r.mu.
	inbound  map[uint32]bool
	outbound uint32
}

var _ xfrm.DataPlane = (*recordingDP)(nil)

// record appends a call with its error to the group's record; the caller
// holds r.mu.
func (d *recordingDP) record(op Op, spi uint32, err error) error {
	g := d.r.groups[d.group]
	c := Call{Op: op, SPI: metrics.SPIString(spi), At: d.r.now()}
	if err != nil {
		c.Err = err.Error()
	}
	g.Calls = append(g.Calls, c)
	g.Inbound = g.Inbound[:0]
	for _, s := range slices.Sorted(maps.Keys(d.inbound)) {
		g.Inbound = append(g.Inbound, metrics.SPIString(s))
	}
	g.Outbound = ""
	if d.outbound != 0 {
		g.Outbound = metrics.SPIString(d.outbound)
	}
	return err
}

// InstallInbound implements xfrm.DataPlane.
func (d *recordingDP) InstallInbound(_ context.Context, sa xfrm.SA) error {
	d.r.mu.Lock()
	defer d.r.mu.Unlock()
	var err error
	switch {
	case sa.SPI == 0:
		err = errors.New("SPI 0")
	case d.inbound[sa.SPI]:
		err = fmt.Errorf("SA %08x is installed already", sa.SPI)
	case len(sa.EncrKey) != sa.Suite.EncrKeyBytes() || len(sa.IntegKey) != sa.Suite.IntegKeyBytes():
		err = fmt.Errorf("SA %08x: keys of %d and %d octets for %s", sa.SPI, len(sa.EncrKey), len(sa.IntegKey), sa.Suite)
	default:
		d.inbound[sa.SPI] = true
		h := sha256.New()
		h.Write([]byte(sa.Suite.String()))
		h.Write([]byte{0})
		h.Write(sa.EncrKey)
		h.Write([]byte{0})
		h.Write(sa.IntegKey)
		var sum [sha256.Size]byte
		h.Sum(sum[:0])
		if d.r.keys[sa.SPI] == nil {
			d.r.keys[sa.SPI] = map[[sha256.Size]byte]struct{}{}
		}
		d.r.keys[sa.SPI][sum] = struct{}{}
	}
	err = d.record(OpInstall, sa.SPI, err)
	if err == nil {
		in := d.r.installed[sa.SPI]
		if in == nil {
			in = &installs{groups: map[string]bool{}}
			d.r.installed[sa.SPI] = in
		}
		in.groups[d.group] = true
		in.last = d.r.groups[d.group].Calls[len(d.r.groups[d.group].Calls)-1].At
		close(d.r.changed)
		d.r.changed = make(chan struct{})
	}
	return err
}

// SetOutbound implements xfrm.DataPlane.
func (d *recordingDP) SetOutbound(_ context.Context, spi uint32) error {
	d.r.mu.Lock()
	defer d.r.mu.Unlock()
	var err error
	if !d.inbound[spi] {
		err = fmt.Errorf("SA %08x is not installed", spi)
	} else {
		d.outbound = spi
	}
	return d.record(OpOutbound, spi, err)
}

// Remove implements xfrm.DataPlane.
func (d *recordingDP) Remove(_ context.Context, spi uint32) error {
	d.r.mu.Lock()
	defer d.r.mu.Unlock()
	var err error
	if !d.inbound[spi] {
		err = fmt.Errorf("SA %08x is not installed", spi)
	} else {
		delete(d.inbound, spi)
		if d.outbound == spi {
			d.outbound = 0
		}
	}
	return d.record(OpRemove, spi, err)
}

// SetPeers implements xfrm.DataPlane; the farm's groups have no peers.
func (d *recordingDP) SetPeers(context.Context, []netip.Prefix, []xfrm.Peer) error { return nil }

// Counters implements xfrm.DataPlane: no traffic, one entry per SA.
func (d *recordingDP) Counters(context.Context) ([]xfrm.Counters, error) {
	d.r.mu.Lock()
	defer d.r.mu.Unlock()
	var cs []xfrm.Counters
	for _, s := range slices.Sorted(maps.Keys(d.inbound)) {
		cs = append(cs, xfrm.Counters{SPI: s})
	}
	return cs, nil
}

// Flush implements xfrm.DataPlane: a recording data plane has no kill
// switch to remove, so it is Close.
func (d *recordingDP) Flush(context.Context) error { return d.Close() }

// Close implements xfrm.DataPlane.
func (d *recordingDP) Close() error {
	d.r.mu.Lock()
	defer d.r.mu.Unlock()
	clear(d.inbound)
	d.outbound = 0
	g := d.r.groups[d.group]
	g.Closed, g.Inbound, g.Outbound = true, nil, ""
	return nil
}
