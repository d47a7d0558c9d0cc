// Package metrics is mpsad's Prometheus instrumentation: the collectors the
// daemon updates (group SAs, members, rekeys, MPSA_PUT retransmissions,
// dropped control datagrams, peer prefixes), a collector that reads the
// data plane's per-SPI counters and the route reflector's per-member
// counters at scrape time, and an HTTP server for them.
//
// Everything lives in the registry of one Metrics value; the package never
// touches prometheus.DefaultRegisterer. Metrics are off by default: mpsad
// always updates a Metrics (its methods are cheap, and safe on a nil
// *Metrics), and serves it only when metrics_listen is configured.
package metrics

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mpsa/mpsa/xfrm"
)

// Namespace prefixes every metric name.
const Namespace = "mpsa"

// Reasons for a rekey, the values of the reason label of
// mpsa_rekeys_total. mpsad may use others; these are the ones it is
// expected to use and that are exported as zero from the start.
const (
	// RekeyLifetime is a rekey because rekey_time of the SA was reached.
	RekeyLifetime = "lifetime"
	// RekeyManual is a rekey requested with `mpsactl rekey GROUP`.
	RekeyManual = "manual"
	// RekeyMemberLeave is a rekey because a member left and
	// rekey_on_leave is set.
	RekeyMemberLeave = "member_leave"
	// RekeyMemberJoin is a rekey because a member joined and
	// rekey_on_join is set.
	RekeyMemberJoin = "member_join"
)

// RekeyReasons lists the predefined rekey reasons.
func RekeyReasons() []string {
	return []string{RekeyLifetime, RekeyManual, RekeyMemberLeave, RekeyMemberJoin}
}

// Reasons for dropping a control datagram, the values of the reason label
// of mpsa_control_dropped_total.
const (
	// DropNoIKESA: mpsad is not connected to charon's VICI socket, so it
	// knows no IKE SA to take the datagram for.
	DropNoIKESA = "no_ike_sa"
	// DropNoControlChild: the source and destination are not the remote
	// and local control addresses of an INSTALLED control child of any
	// group (there is no IKE SA with that peer, or its control child is
	// not installed, or the member's session with the controller is down).
	DropNoControlChild = "no_control_child"
	// DropSPIMismatch: the IKE header's SPIs do not match that IKE SA.
	DropSPIMismatch = "spi_mismatch"
	// DropNotProtected: the datagram did not arrive through ESP (plaintext
	// on the control port).
	DropNotProtected = "not_protected"
	// DropMalformed: the datagram does not parse as an IKEv2 message with
	// MPSA payloads.
	DropMalformed = "malformed"
	// DropUnexpected: a well-formed message that is not expected in the
	// current state (e.g. MPSA_PUT at a controller, a response to nothing).
	DropUnexpected = "unexpected"
)

// DropReasons lists the predefined drop reasons.
func DropReasons() []string {
	return []string{DropNoIKESA, DropNoControlChild, DropSPIMismatch, DropNotProtected, DropMalformed, DropUnexpected}
}

// CountersFunc returns the per-SPI counters of a group's data plane. It is
// called at scrape time with a context that carries the scrape deadline;
// xfrm.DataPlane.Counters has this signature.
type CountersFunc func(ctx context.Context) ([]xfrm.Counters, error)

// DropsFunc returns the packets a group's data plane dropped since it
// started, by reason (xfrm/userspace.Backend.DropCounts). It is called at
// scrape time like a CountersFunc.
type DropsFunc func(ctx context.Context) (map[string]uint64, error)

// BGPMember is one member of a controller group's route reflector, as its
// counters are exported at scrape time.
type BGPMember struct {
	// Identity is the member's IKE identity (the member label).
	Identity string
	// Accepted and Rejected count every prefix the member advertised
	// since it was added, by the policy's verdict.
	Accepted, Rejected uint64
	// AcceptedNow and RejectedNow are the prefixes it advertises now.
	AcceptedNow, RejectedNow int
}

// BGPFunc returns the members of a controller group's route reflector; it
// is called at scrape time like a CountersFunc.
type BGPFunc func(ctx context.Context) ([]BGPMember, error)

// Options configure New. The zero value is usable.
type Options struct {
	// Version and Commit are exported as labels of mpsa_build_info.
	Version, Commit string
	// Now is the clock for mpsa_group_sa_age_seconds; time.Now when nil.
	Now func() time.Time
	// ScrapeTimeout bounds each CountersFunc call; 5s when zero.
	ScrapeTimeout time.Duration
	// NoRuntimeCollectors leaves out the Go runtime (go_*) and process
	// (process_*) collectors, which are registered by default.
	NoRuntimeCollectors bool
}

// Metrics holds mpsad's collectors and the registry they are registered
// in. Its methods are safe for concurrent use and do nothing on a nil
// *Metrics.
type Metrics struct {
	reg                *prometheus.Registry
	members            *prometheus.GaugeVec
	rekeys             *prometheus.CounterVec
	putRetransmissions *prometheus.CounterVec
	dropped            *prometheus.CounterVec
	peerPrefixes       *prometheus.GaugeVec
	groups             *groupCollector
}

// New returns Metrics with every collector registered in a new registry.
func New(opts Options) (*Metrics, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ScrapeTimeout <= 0 {
		opts.ScrapeTimeout = 5 * time.Second
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "group_members",
			Help: "Members of the group that have acknowledged a group SA (controller).",
		}, []string{"group"}),
		rekeys: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "rekeys_total",
			Help: "Rekeys of the group SA, by reason (lifetime, manual, member_leave, member_join).",
		}, []string{"group", "reason"}),
		putRetransmissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "put_retransmissions_total",
			Help: "MPSA_PUT requests sent again because no response arrived in time (controller).",
		}, []string{"group"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "control_dropped_total",
			Help: "Datagrams on the control port dropped without an answer, by reason.",
		}, []string{"reason"}),
		peerPrefixes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "peer_prefixes",
			Help: "Prefixes in the member's peer table, by origin (static, bgp): those the data plane uses.",
		}, []string{"group", "origin"}),
		groups: newGroupCollector(opts.Now, opts.ScrapeTimeout),
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help:        "Always 1; the labels give the version and commit of mpsad.",
		ConstLabels: prometheus.Labels{"version": opts.Version, "commit": opts.Commit},
	})
	buildInfo.Set(1)
	cs := []prometheus.Collector{m.members, m.rekeys, m.putRetransmissions, m.dropped, m.peerPrefixes, m.groups, buildInfo}
	if !opts.NoRuntimeCollectors {
		cs = append(cs,
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: registering collector: %w", err)
		}
	}
	for _, r := range DropReasons() {
		m.dropped.WithLabelValues(r)
	}
	return m, nil
}

// Registry is the registry every collector of m is registered in; pass it
// to Serve.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// AddGroup exports the group's counters and gauges at zero, so that they
// exist before the first event: a controller group has
// mpsa_group_members 0 until a member acknowledges its SA, rather than no
// series at all. Calling it again for a known group changes nothing.
func (m *Metrics) AddGroup(group string) {
	if m == nil {
		return
	}
	// WithLabelValues creates the series at 0, or returns it unchanged.
	m.members.WithLabelValues(group)
	for _, r := range RekeyReasons() {
		m.rekeys.WithLabelValues(group, r)
	}
	m.putRetransmissions.WithLabelValues(group)
}

// RemoveGroup deletes every series labelled with the group, and its SA and
// traffic source; for a group removed by a reload.
func (m *Metrics) RemoveGroup(group string) {
	if m == nil {
		return
	}
	m.members.DeletePartialMatch(prometheus.Labels{"group": group})
	m.rekeys.DeletePartialMatch(prometheus.Labels{"group": group})
	m.putRetransmissions.DeletePartialMatch(prometheus.Labels{"group": group})
	m.peerPrefixes.DeletePartialMatch(prometheus.Labels{"group": group})
	m.groups.remove(group)
}

// SetPeerPrefixes sets how many prefixes of a member group's peer table
// come from origin (static or bgp).
func (m *Metrics) SetPeerPrefixes(group, origin string, n int) {
	if m == nil {
		return
	}
	m.peerPrefixes.WithLabelValues(group, origin).Set(float64(n))
}

// SetBGPSource makes the group's route reflector series
// (mpsa_bgp_prefixes_accepted_total, mpsa_bgp_prefixes_rejected_total,
// mpsa_bgp_prefixes) come from fn, called at every scrape; nil removes
// the source.
func (m *Metrics) SetBGPSource(group string, fn BGPFunc) {
	if m == nil {
		return
	}
	m.groups.setBGP(group, fn)
}

// SetGroupSA records that the SA in force for the group has this SPI and
// was created at the given time (at the controller: generated; at a
// member: received in MPSA_PUT). mpsa_group_sa_age_seconds is computed from
// it at scrape time.
func (m *Metrics) SetGroupSA(group string, spi uint32, created time.Time) {
	if m == nil {
		return
	}
	m.groups.setSA(group, spi, created)
}

// ClearGroupSA records that the group has no SA in force (a member whose
// SA expired), so that no age is exported for it.
func (m *Metrics) ClearGroupSA(group string) {
	if m == nil {
		return
	}
	m.groups.clearSA(group)
}

// SetMembers sets the number of members of the group.
func (m *Metrics) SetMembers(group string, n int) {
	if m == nil {
		return
	}
	m.members.WithLabelValues(group).Set(float64(n))
}

// Rekeyed counts a rekey of the group's SA for a reason (one of the Rekey
// constants).
func (m *Metrics) Rekeyed(group, reason string) {
	if m == nil {
		return
	}
	m.rekeys.WithLabelValues(group, reason).Inc()
}

// PutRetransmitted counts one retransmission of an MPSA_PUT request.
func (m *Metrics) PutRetransmitted(group string) {
	if m == nil {
		return
	}
	m.putRetransmissions.WithLabelValues(group).Inc()
}

// ControlDropped counts one dropped control datagram with a reason (one of
// the Drop constants).
func (m *Metrics) ControlDropped(reason string) {
	if m == nil {
		return
	}
	m.dropped.WithLabelValues(reason).Inc()
}

// SetTrafficSource makes the per-SPI traffic series of the group come from
// fn, called at every scrape; nil removes the source.
func (m *Metrics) SetTrafficSource(group string, fn CountersFunc) {
	if m == nil {
		return
	}
	m.groups.setSource(group, fn)
}

// SetDropSource makes the group's mpsa_dataplane_dropped_total series come
// from fn, called at every scrape; nil removes the source. A data plane
// that does not count its drops has none.
func (m *Metrics) SetDropSource(group string, fn DropsFunc) {
	if m == nil {
		return
	}
	m.groups.setDrops(group, fn)
}

// groupCollector exports what is computed or fetched at scrape time: the
// age of each group's SA, the data plane's per-SPI counters and its drops.
type groupCollector struct {
	now     func() time.Time
	timeout time.Duration

	ageDesc, packetsDesc, bytesDesc, errorsDesc, sourceErrDesc, droppedDesc *prometheus.Desc
	bgpAcceptedDesc, bgpRejectedDesc, bgpPrefixesDesc, bgpErrDesc           *prometheus.Desc

	mu      sync.Mutex
	sas     map[string]groupSA
	sources map[string]CountersFunc
	drops   map[string]DropsFunc
	bgp     map[string]BGPFunc
}

type groupSA struct {
	spi     uint32
	created time.Time
}

func newGroupCollector(now func() time.Time, timeout time.Duration) *groupCollector {
	name := func(n string) string { return prometheus.BuildFQName(Namespace, "", n) }
	return &groupCollector{
		now:     now,
		timeout: timeout,
		ageDesc: prometheus.NewDesc(name("group_sa_age_seconds"),
			"Seconds since the group SA in force was created.", []string{"group", "spi"}, nil),
		packetsDesc: prometheus.NewDesc(name("sa_packets_total"),
			"ESP packets through the shared SA, by direction (in, out).", []string{"group", "spi", "direction"}, nil),
		bytesDesc: prometheus.NewDesc(name("sa_bytes_total"),
			"Bytes of ESP payload through the shared SA, by direction (in, out).", []string{"group", "spi", "direction"}, nil),
		errorsDesc: prometheus.NewDesc(name("sa_errors_total"),
			"Packets of the shared SA dropped: in, failed integrity, padding or length checks; out, could not be sent.", []string{"group", "spi", "direction"}, nil),
		sourceErrDesc: prometheus.NewDesc(name("dataplane_scrape_error"),
			"1 if reading the data plane's counters failed at this scrape, else 0.", []string{"group"}, nil),
		droppedDesc: prometheus.NewDesc(name("dataplane_dropped_total"),
			"Packets the member's data plane dropped, by reason (no_outbound_sa, no_route, unknown_spi, malformed, tun_write_errors, unknown_peer, origin, replay, seq_exhausted, seq_lease, sa_in_errors, sa_out_errors).", []string{"group", "reason"}, nil),
		bgpAcceptedDesc: prometheus.NewDesc(name("bgp_prefixes_accepted_total"),
			"Prefixes a member advertised that the route reflector's policy accepted (controller).", []string{"group", "member"}, nil),
		bgpRejectedDesc: prometheus.NewDesc(name("bgp_prefixes_rejected_total"),
			"Prefixes a member advertised that the route reflector's policy rejected (controller).", []string{"group", "member"}, nil),
		bgpPrefixesDesc: prometheus.NewDesc(name("bgp_prefixes"),
			"Prefixes a member advertises now, by the policy's verdict (accepted, rejected) (controller).", []string{"group", "member", "verdict"}, nil),
		bgpErrDesc: prometheus.NewDesc(name("bgp_scrape_error"),
			"1 if reading the route reflector's counters failed at this scrape, else 0.", []string{"group"}, nil),
		sas:     make(map[string]groupSA),
		sources: make(map[string]CountersFunc),
		drops:   make(map[string]DropsFunc),
		bgp:     make(map[string]BGPFunc),
	}
}

func (c *groupCollector) setBGP(group string, fn BGPFunc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if fn == nil {
		delete(c.bgp, group)
		return
	}
	c.bgp[group] = fn
}

func (c *groupCollector) setDrops(group string, fn DropsFunc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if fn == nil {
		delete(c.drops, group)
		return
	}
	c.drops[group] = fn
}

func (c *groupCollector) setSA(group string, spi uint32, created time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sas[group] = groupSA{spi: spi, created: created}
}

func (c *groupCollector) clearSA(group string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.sas, group)
}

func (c *groupCollector) setSource(group string, fn CountersFunc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if fn == nil {
		delete(c.sources, group)
		return
	}
	c.sources[group] = fn
}

func (c *groupCollector) remove(group string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.sas, group)
	delete(c.sources, group)
	delete(c.drops, group)
	delete(c.bgp, group)
}

// Describe implements prometheus.Collector.
func (c *groupCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.ageDesc, c.packetsDesc, c.bytesDesc, c.errorsDesc, c.sourceErrDesc, c.droppedDesc,
		c.bgpAcceptedDesc, c.bgpRejectedDesc, c.bgpPrefixesDesc, c.bgpErrDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. The data-plane callbacks are
// called without holding the lock, so a slow data plane never blocks the
// daemon's updates.
func (c *groupCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	now := c.now()
	for group, sa := range c.sas {
		age := now.Sub(sa.created).Seconds()
		ch <- prometheus.MustNewConstMetric(c.ageDesc, prometheus.GaugeValue, max(age, 0), group, SPIString(sa.spi))
	}
	sources, drops, bgps := maps.Clone(c.sources), maps.Clone(c.drops), maps.Clone(c.bgp)
	c.mu.Unlock()

	for group, fn := range bgps {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		members, err := fn(ctx)
		cancel()
		failed := 0.0
		if err != nil {
			failed = 1
		}
		ch <- prometheus.MustNewConstMetric(c.bgpErrDesc, prometheus.GaugeValue, failed, group)
		for _, m := range members {
			ch <- prometheus.MustNewConstMetric(c.bgpAcceptedDesc, prometheus.CounterValue, float64(m.Accepted), group, m.Identity)
			ch <- prometheus.MustNewConstMetric(c.bgpRejectedDesc, prometheus.CounterValue, float64(m.Rejected), group, m.Identity)
			ch <- prometheus.MustNewConstMetric(c.bgpPrefixesDesc, prometheus.GaugeValue, float64(m.AcceptedNow), group, m.Identity, "accepted")
			ch <- prometheus.MustNewConstMetric(c.bgpPrefixesDesc, prometheus.GaugeValue, float64(m.RejectedNow), group, m.Identity, "rejected")
		}
	}

	for group, fn := range drops {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		counts, err := fn(ctx)
		cancel()
		if err != nil {
			continue // mpsa_dataplane_scrape_error reports the data plane
		}
		for reason, n := range counts {
			ch <- prometheus.MustNewConstMetric(c.droppedDesc, prometheus.CounterValue, float64(n), group, reason)
		}
	}

	for group, fn := range sources {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		counters, err := fn(ctx)
		cancel()
		failed := 0.0
		if err != nil {
			failed = 1
		}
		ch <- prometheus.MustNewConstMetric(c.sourceErrDesc, prometheus.GaugeValue, failed, group)
		if err != nil {
			continue
		}
		for _, k := range counters {
			spi := SPIString(k.SPI)
			for _, v := range []struct {
				desc    *prometheus.Desc
				in, out uint64
			}{
				{c.packetsDesc, k.InPackets, k.OutPackets},
				{c.bytesDesc, k.InBytes, k.OutBytes},
				{c.errorsDesc, k.InErrors, k.OutErrors},
			} {
				ch <- prometheus.MustNewConstMetric(v.desc, prometheus.CounterValue, float64(v.in), group, spi, "in")
				ch <- prometheus.MustNewConstMetric(v.desc, prometheus.CounterValue, float64(v.out), group, spi, "out")
			}
		}
	}
}

// SPIString formats an SPI as the spi label shows it, "0x%08x", the form
// `mpsactl status` prints.
func SPIString(spi uint32) string { return fmt.Sprintf("0x%08x", spi) }
