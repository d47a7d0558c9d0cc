// Package kernel is mpsa's Linux kernel data plane: it installs the shared
// ESP SA as XFRM states and policies over netlink.
//
// What it installs, for a member whose underlay addresses are U and whose
// LAN prefixes are L, with peers P (prefix via underlay):
//
//   - one inbound state per address in U: destination that address, any
//     source, the shared SPI, tunnel mode, replay window 0, no ESN. The
//     kernel finds inbound states by (destination, SPI, protocol) only, so
//     one state receives from every peer.
//   - one outbound state per peer underlay, source the address in U of the
//     same family, with the same SPI and keys, a soft packet limit (the
//     kernel reports XFRM_MSG_EXPIRE before the sequence numbers run out)
//     and, when known, the sequence number to continue from.
//   - for every prefix pair (l in L, p in P) of the same family: an out
//     policy l -> p whose template names the peer's underlay and the
//     outbound SPI, and in and fwd policies p -> l whose template accepts
//     any of the installed inbound SPIs. Until an outbound SA is set, the
//     out policies block, so nothing for a peer leaves in plaintext.
//   - when L is not empty, for every peer prefix p (whether or not L has
//     a prefix of its family): a fallback out policy from any source of
//     p's family to p that blocks, at priority Priority+1 (less preferred
//     than the policies above). Traffic the member originates from an
//     address outside L (its underlay address, say) to a peer's LAN is
//     dropped instead of leaving in plaintext.
//
// In route-based mode (Config.Interface set) the backend also creates an
// XFRM interface with Config.IfID and puts that if_id on every state and
// policy: only traffic the operator routes into the interface is
// protected, and what arrives appears on it. A link of that name that does
// not carry the group's alias (InterfaceAlias) is not the group's: New
// refuses to start and names it, rather than adopt it (Flush would then
// delete it) or replace it.
//
// # Kill switch
//
// The policies are the group's kill switch, and they outlive the process.
// Close (mpsad stopping or restarting) turns every out policy into a
// block policy and deletes the states, whose keys leave the kernel, but
// keeps the policies and the XFRM interface: until an mpsad serves the
// group again, traffic between the group's prefixes is dropped, in both
// directions, never sent in plaintext. After a crash everything stays as
// it was, states included, and the kernel goes on protecting traffic with
// them. New adopts what it finds (see below). Only Flush, or FlushGroup
// (mpsactl flush), removes the policies and the interface.
//
// # Recognizing its own objects
//
// Every state carries Config.ReqID (default DefaultReqID) and every policy
// has priority Config.Priority (default DefaultPriority) and either
// templates with that reqid or, for the blocking out policies, no template
// and action block; the fallback block policies have priority
// Config.Priority+1, no template and action block. mpsad derives reqid
// and priorities from the group's name (xfrm/groupid), one group apart
// from every other configured group. The XFRM interface carries the alias
// InterfaceAlias(Config.Group).
//
// New adopts the policies with these marks as its own: it keeps them,
// turns out policies that still name a template into block policies, and
// deletes the states with the reqid (after noting the highest outbound
// sequence number of each SPI, and recording it with Config.SeqLeaseDir).
// The first SetPeers then reconciles the policies with the configuration.
// A policy at one of the priorities that does not have the shape above,
// or a state with the reqid that is not a tunnel-mode ESP state, is not
// mpsa's: New refuses to start and names it, rather than delete or
// replace what it cannot prove is its own.
//
// # Rollover
//
// InstallInbound adds the new inbound states while the old ones stay.
// SetOutbound first adds the new outbound states, then replaces each out
// policy's template with one naming the new SPI (an atomic update per
// policy): at every moment each out policy has a matching state. The old
// outbound states stay until Remove of the old SPI, because a packet whose
// route the kernel looked up just before the update still goes through
// the old state, and is dropped if that state is already gone (seen in the
// qemu test as EINVAL on send). Remove deletes the SA's inbound and
// outbound states.
//
// A SetOutbound (or SetPeers, or Remove of the outbound SA) that fails
// part way may leave some out policies naming the new SPI and others the
// old; the backend then recomputes everything at the next SetPeers,
// SetOutbound or Remove, and Remove does so before it deletes any state,
// so that no policy is left naming a state that is gone. Before the first
// SetPeers the peer table is not known: SetOutbound and Remove only note
// the outbound SA, and leave the adopted policies as they are.
//
// # Peer changes
//
// SetPeers compares the new peer table with the one in force, a map
// lookup per peer, and computes and applies policies and outbound states
// only for the prefixes that were added, removed or moved to another
// underlay; a change of the local prefixes or of the outbound SA
// recomputes all of them.
//
// A peer table in which one prefix lies inside another that leads to
// another peer is refused, and the table in force stays: every policy of
// a group has one priority, and the kernel chooses among policies of one
// priority by insertion, not by prefix length, so it could not send a
// destination to the peer of its longest prefix (the userspace data
// plane can).
//
// A peer that cannot be served does not make the table refused: a prefix
// whose underlay has no local underlay address of its family, or that two
// peers claim with different underlays, gets the policies of a peer
// without an outbound SA (it is blocked, both ways), a peer with an
// invalid prefix is left out, the rest of the table is applied, and
// SetPeers returns an error naming them.
//
// # Sequence numbers
//
// The shared SA runs without ESN (a shared inbound state cannot keep a
// replay window for many senders, and ESN needs one), so an outbound state
// has 2^32-1 sequence numbers. The kernel never wraps them (no
// XFRM_SA_XFLAG_OSEQ_MAY_WRAP): when they run out it drops every further
// packet of the state (counted as XfrmOutStateSeqError), nothing leaves in
// plaintext. Before that, at Config.SeqSoftLimit, the kernel reports a
// soft expiry, which the backend logs and Warnings lists.
//
// A receiver with the userspace data plane keeps a replay window per SA
// and sender, so an outbound state must never number below what an
// earlier state of its SPI may have sent, toward any peer: each state has
// its own counter, and a receiver sees only the one toward it, so the
// highest over all of the SPI's states is a safe start for every state.
// An outbound state starts after the highest of:
//
//   - the last numbers of the SPI's states deleted in this run (a peer
//     that left and came back) or left by a crashed run (read by New
//     before it deletes them), each plus SeqMargin: a state's number is
//     read after its out policies stopped sending (block or gone), and a
//     packet that passed the policy lookup just before can still take a
//     number until the state is deleted;
//   - the numbers of the SPI's live states that the same change retires,
//     read before the new states are added, plus SeqMargin: a peer that
//     moved to another underlay keeps its replay window for this member,
//     and the old state sends until the policies switch;
//   - with Config.SeqLeaseDir, the SA's record on disk (xfrm/seqlease, one
//     file per SPI, the userspace data plane's lease format): at
//     InstallInbound the backend reads it and reserves Config.SeqReserve
//     numbers beyond; the reservation is moved ahead of the states'
//     highest number at every Counters call and, when Counters was not
//     called for half of Config.SeqCheckInterval, every
//     Config.SeqCheckInterval (the same dump of the states, and a file
//     write per SA only when less than half of the distance is left). New
//     records the numbers of a crashed run's states before it deletes
//     them; Close, once the states are deleted, records the exact highest
//     number read (plus SeqMargin), below the reservation; Remove deletes
//     the file; Flush leaves it at its reservation at least; files of SAs
//     that ended otherwise are pruned at New after mpsa.MaxLifetime and a
//     day. After a power loss the next run starts at the last
//     reservation written, which is ahead of what was sent unless the
//     traffic outgrew it between two checks (logged when seen).
package kernel

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/seqlease"
)

// DefaultReqID is the reqid on every state and policy template the backend
// installs unless Config.ReqID says otherwise: "mp" in ASCII followed by
// 0x5a01, far above the small reqids charon allocates from 1 upwards.
const DefaultReqID = 0x6d705a01

// DefaultPriority is the priority of every policy the backend installs
// unless Config.Priority says otherwise. A lower value is preferred; charon
// computes priorities in the hundreds of thousands for its own policies, so
// a shared-SA policy wins over a broader charon policy on the same prefix
// pair. Together with the reqid it marks the backend's policies.
const DefaultPriority = 0x1b58 // 7000

// DefaultSeqSoftLimit is the outbound sequence number at which the kernel
// reports a soft expiry: a quarter of the space is left, about 18 minutes
// at a million packets a second.
const DefaultSeqSoftLimit = 3 << 30

// Config configures the kernel backend.
type Config struct {
	// NetNS is the path of the network namespace to work in
	// ("/run/netns/NAME", "/proc/PID/ns/net"); empty means the namespace
	// of the calling thread when New runs.
	NetNS string
	// Group names the group, for logs and the XFRM interface's alias.
	Group string
	// Underlay are the member's own underlay addresses: one inbound state
	// each, and the source of the outbound state to a peer of the same
	// family. At least one is required.
	Underlay []netip.Addr
	// ReqID marks the states and policy templates; DefaultReqID if 0.
	ReqID uint32
	// Priority is the priority of the policies; DefaultPriority if 0.
	Priority uint32
	// Interface, when not empty, selects route-based mode: the backend
	// creates an XFRM interface of this name with IfID (adopting one of
	// the group's own that is already there, recognized by its alias
	// InterfaceAlias(Group), and replacing one of the group's with
	// another if_id), sets it up, and leaves it in place on Close; Flush
	// removes it. New refuses a link of this name that is not the
	// group's. Addresses and routes on it are the operator's.
	Interface string
	// IfID is the XFRM interface ID for route-based mode; required, and
	// not 0, when Interface is set.
	IfID uint32
	// AllowCounterMode permits AES-GCM, AES-CTR and ChaCha20-Poly1305.
	// With one key shared by many senders, the kernel's per-state random
	// salt and per-sender sequence numbers can repeat a nonce (RFC 6054),
	// so they are refused unless this is set (for tests and lab use).
	AllowCounterMode bool
	// SeqLeaseDir, when set, is the directory of the SAs' sequence-number
	// records (xfrm/seqlease), one file per SPI, in the format of the
	// userspace data plane's leases: an SA installed again after a
	// restart, a reboot or a power loss numbers its packets above every
	// number an earlier run may have sent, so that the replay windows of
	// peers with the userspace data plane do not drop them (package
	// documentation, "Sequence numbers"). It is created if needed;
	// records older than mpsa.MaxLifetime and a day are removed at start.
	// mpsad sets it for every group.
	SeqLeaseDir string
	// SeqReserve is how far ahead of the highest outbound sequence number
	// of an SA its record is kept at least (and at most 16 times that,
	// at a high rate); DefaultSeqReserve if 0.
	SeqReserve uint32
	// SeqCheckInterval is how often the outbound sequence numbers are
	// read to keep the records ahead, unless a Counters call read them
	// less than half of it ago; DefaultSeqCheckInterval if 0.
	SeqCheckInterval time.Duration
	// SeqSoftLimit is the outbound sequence number at which the kernel
	// reports a soft expiry; DefaultSeqSoftLimit if 0.
	SeqSoftLimit uint32
	// Logger receives the backend's logs; slog.Default() if nil. No key
	// is ever logged.
	Logger *slog.Logger
}

// InterfaceAlias is the alias the backend gives the XFRM interface of
// group, by which FlushGroup finds it.
func InterfaceAlias(group string) string { return "mpsa group " + group }

// Backend is the kernel data plane. It implements xfrm.DataPlane.
type Backend struct {
	cfg Config
	log *slog.Logger
	h   *netlink.Handle
	xs  *xfrmSocket
	// mon receives the kernel's expiry reports; monDone is closed when
	// its goroutine has returned.
	mon     *nl.NetlinkSocket
	monDone chan struct{}

	mu sync.Mutex
	// closed is set by the first Close or Flush; done is closed once it
	// has finished, for the calls that come meanwhile to wait on.
	closed bool
	done   chan struct{}
	sas    map[uint32]installed // installed SAs, keys copied
	outSPI uint32
	local  []netip.Prefix
	// table is the peer table in force: peer prefix (masked) -> underlay,
	// this member's own underlays left out; uses counts the prefixes of
	// each underlay in it.
	table map[netip.Prefix]netip.Addr
	uses  map[netip.Addr]int
	// full makes the next SetPeers recompute everything: before the
	// first, and after a failed SetPeers, SetOutbound or Remove, which
	// may have left the kernel half way between two plans (some out
	// policies naming the new SPI, others the old). Remove then
	// reconciles first too, so that it never deletes states a policy
	// still names. peersSet tells that a SetPeers succeeded: before, the
	// table is not known, and the policies in the kernel (adopted ones)
	// are left as they are.
	full, peersSet bool
	// wanted is the peer table last given to SetPeers, which Protect
	// applies again, and the addresses given to Protect.
	wanted xfrm.ProtectedTable

	cur  plan // what is in the kernel now
	link netlink.Link
	// seq is the highest outbound sequence number known per SPI, from
	// outbound states deleted or adopted (SeqMargin included).
	seq map[uint32]uint32
	// warnings are the soft expiries of outbound states, by state.
	warnings map[outKey]string
	// leases is the directory of Config.SeqLeaseDir, nil without; recs
	// holds the record of every installed SA then. lastCheck is when the
	// records were last compared with the states; chkStop and chkDone
	// stop and wait for the goroutine that compares them (startSeqChecks).
	leases           *seqlease.Dir
	recs             map[uint32]*seqRecord
	lastCheck        time.Time
	chkStop, chkDone chan struct{}
	// seqWarnings are the records that cannot be written, by SPI.
	seqWarnings map[uint32]string
	// ops counts the kernel requests that change objects (tests).
	ops int
}

var (
	_ xfrm.DataPlane = (*Backend)(nil)
	_ xfrm.Protector = (*Backend)(nil)
)

// New opens netlink in the configured namespace, adopts the objects of an
// earlier run (see the package documentation), and in route-based mode
// creates or adopts the XFRM interface.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if len(cfg.Underlay) == 0 {
		return nil, errors.New("kernel data plane: no underlay address configured")
	}
	cfg.Underlay = slices.Clone(cfg.Underlay)
	for i, u := range cfg.Underlay {
		if !u.IsValid() || u.IsUnspecified() {
			return nil, fmt.Errorf("kernel data plane: underlay address %q is not usable", u)
		}
		cfg.Underlay[i] = u.Unmap()
	}
	if cfg.ReqID == 0 {
		cfg.ReqID = DefaultReqID
	}
	if cfg.Priority == 0 {
		cfg.Priority = DefaultPriority
	}
	if cfg.SeqSoftLimit == 0 {
		cfg.SeqSoftLimit = DefaultSeqSoftLimit
	}
	if cfg.SeqReserve == 0 {
		cfg.SeqReserve = DefaultSeqReserve
	}
	if cfg.SeqCheckInterval <= 0 {
		cfg.SeqCheckInterval = DefaultSeqCheckInterval
	}
	if cfg.Interface != "" && cfg.IfID == 0 {
		return nil, fmt.Errorf("kernel data plane: XFRM interface %s needs a non-zero if_id", cfg.Interface)
	}
	if cfg.Interface == "" {
		cfg.IfID = 0
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("dataplane", "xfrm", "reqid", fmt.Sprintf("%#x", cfg.ReqID), "priority", cfg.Priority)

	ns := netns.None()
	if cfg.NetNS != "" {
		var err error
		if ns, err = netns.GetFromPath(cfg.NetNS); err != nil {
			return nil, fmt.Errorf("kernel data plane: open network namespace %s: %w", cfg.NetNS, err)
		}
		defer ns.Close()
	}
	h, xs, err := openHandles(ns)
	if err != nil {
		return nil, fmt.Errorf("kernel data plane: %w", err)
	}
	b := &Backend{
		cfg: cfg, log: log, h: h, xs: xs, done: make(chan struct{}),
		sas:         map[uint32]installed{},
		table:       map[netip.Prefix]netip.Addr{},
		uses:        map[netip.Addr]int{},
		full:        true,
		cur:         plan{policies: map[policyKey]netlink.XfrmPolicy{}, out: map[outKey]netip.Addr{}},
		seq:         map[uint32]uint32{},
		warnings:    map[outKey]string{},
		recs:        map[uint32]*seqRecord{},
		seqWarnings: map[uint32]string{},
	}
	if cfg.SeqLeaseDir != "" {
		err = b.openLeases()
	}
	if err == nil {
		err = b.adopt(ctx)
	}
	if err == nil && cfg.Interface != "" {
		err = b.ensureInterface(ctx)
	}
	if err == nil {
		err = b.startMonitor(ns)
	}
	if err != nil {
		h.Close()
		xs.close()
		return nil, err
	}
	b.startSeqChecks()
	return b, nil
}

// openHandles opens the netlink handle (routes and XFRM) and the
// backend's own XFRM socket in ns.
func openHandles(ns netns.NsHandle) (*netlink.Handle, *xfrmSocket, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE, unix.NETLINK_XFRM)
	if err != nil {
		return nil, nil, fmt.Errorf("open netlink: %w", err)
	}
	xs, err := openXfrmSocket(ns)
	if err != nil {
		h.Close()
		return nil, nil, fmt.Errorf("open netlink: %w", err)
	}
	return h, xs, nil
}

// marks are the marks of one group's objects.
type marks struct {
	reqID, priority uint32
}

// classify tells whether a policy carries the priorities of m, and if so
// whether it has the shape of one of the group's policies (ours).
func (m marks) classify(p netlink.XfrmPolicy) (marked, ours bool) {
	switch uint32(p.Priority) {
	case m.priority + 1:
		return true, len(p.Tmpls) == 0 && p.Action == netlink.XFRM_POLICY_BLOCK
	case m.priority:
		if len(p.Tmpls) == 0 {
			return true, p.Action == netlink.XFRM_POLICY_BLOCK
		}
		if p.Action != netlink.XFRM_POLICY_ALLOW {
			return true, false
		}
		for _, t := range p.Tmpls {
			if uint32(t.Reqid) != m.reqID || t.Proto != netlink.XFRM_PROTO_ESP || t.Mode != netlink.XFRM_MODE_TUNNEL {
				return true, false
			}
		}
		return true, true
	}
	return false, false
}

// classifyState tells whether a state carries the reqid of m, and if so
// whether it has the shape of one of the group's states.
func (m marks) classifyState(s stateInfo) (marked, ours bool) {
	if s.reqid != m.reqID {
		return false, false
	}
	return true, s.proto == unix.IPPROTO_ESP && s.mode == uint8(netlink.XFRM_MODE_TUNNEL)
}

func (b *Backend) marks() marks { return marks{reqID: b.cfg.ReqID, priority: b.cfg.Priority} }

// foreignPolicy is the error for a policy with a group's marks that is not
// the group's.
func foreignPolicy(p netlink.XfrmPolicy, m marks) error {
	return fmt.Errorf("policy %s %v -> %v at priority %d (this group's) has templates or an action mpsa never installs; it is not mpsa's, so it is left alone: remove it, or rename the group to give it other marks (reqid %#x)", p.Dir, p.Src, p.Dst, p.Priority, m.reqID)
}

// adopt takes over the objects an earlier run of the group left in the
// kernel: the policies stay (out policies blocking), the states go.
func (b *Backend) adopt(ctx context.Context) error {
	m := b.marks()
	pols, err := b.xs.listPolicies()
	if err != nil {
		return fmt.Errorf("kernel data plane: list policies: %w", err)
	}
	kept, stale := 0, 0
	for _, p := range pols {
		marked, ours := m.classify(p)
		if !marked {
			continue
		}
		if !ours {
			return fmt.Errorf("kernel data plane: %w", foreignPolicy(p, m))
		}
		if p.Ifid != int(b.cfg.IfID) {
			// Ours, from a run with another if_id (route-based mode
			// switched): not part of this configuration.
			if err := b.h.XfrmPolicyDel(&p); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("kernel data plane: remove policy %s %v -> %v of if_id %d: %w", p.Dir, p.Src, p.Dst, p.Ifid, err)
			}
			stale++
			continue
		}
		k := policyKey{p.Dir, fromIPNet(p.Src), fromIPNet(p.Dst)}
		if p.Dir == netlink.XFRM_DIR_OUT && len(p.Tmpls) > 0 {
			// Its state goes below: block until SetOutbound.
			blk := p
			blk.Tmpls, blk.Action = nil, netlink.XFRM_POLICY_BLOCK
			if err := b.h.XfrmPolicyUpdate(&blk); err != nil {
				return fmt.Errorf("kernel data plane: make adopted policy %s block: %w", k, err)
			}
			p = blk
		}
		b.cur.policies[k] = p
		kept++
	}
	states, err := b.xs.listStates()
	if err != nil {
		return fmt.Errorf("kernel data plane: %w", err)
	}
	var mine []stateInfo
	for _, s := range states {
		marked, ours := m.classifyState(s)
		if !marked {
			continue
		}
		if !ours {
			return fmt.Errorf("kernel data plane: state %08x to %s has this group's reqid %#x but is not a tunnel-mode ESP state; it is not mpsa's, so it is left alone: remove it, or rename the group", s.spi, s.dst, m.reqID)
		}
		if s.src.IsValid() && !s.src.IsUnspecified() {
			// Read after the out policies turned to block.
			b.noteSeq(s.spi, s.oseq)
		}
		mine = append(mine, s)
	}
	// On disk before the states go: a crash from here on still finds
	// the numbers.
	if err := b.raiseRecords(b.seq); err != nil {
		return err
	}
	removed := 0
	for _, s := range mine {
		if err := b.delStateIf(s.dst, s.spi, s.ifid); err != nil {
			return fmt.Errorf("kernel data plane: remove state %08x to %s of an earlier run: %w", s.spi, s.dst, err)
		}
		removed++
	}
	if kept+stale+removed > 0 {
		b.log.InfoContext(ctx, "adopted the group's objects of an earlier run", "policies_kept", kept, "policies_removed", stale, "states_removed", removed)
	}
	return nil
}

// ensureInterface adopts the group's XFRM interface if it is there with
// the configured if_id, replaces it if it has another, and creates it
// otherwise. A link of that name that is not the group's (not an XFRM
// interface, or without the group's alias: the operator's, or another
// group's) is refused and left alone: adopting it would have Flush delete
// it.
func (b *Backend) ensureInterface(ctx context.Context) error {
	name := b.cfg.Interface
	if l, err := b.h.LinkByName(name); err == nil {
		x, ok := l.(*netlink.Xfrmi)
		if !ok {
			return fmt.Errorf("kernel data plane: interface %s exists and is a %s, not an XFRM interface; it is left alone: remove it, or give the group another xfrm_interface", name, l.Type())
		}
		if alias := l.Attrs().Alias; alias != InterfaceAlias(b.cfg.Group) {
			return fmt.Errorf("kernel data plane: XFRM interface %s (if_id %d) exists but is not this group's (its alias is %q, not %q): it is left alone; remove it (ip link del %s), or give the group another xfrm_interface",
				name, x.Ifid, alias, InterfaceAlias(b.cfg.Group), name)
		}
		if x.Ifid == b.cfg.IfID {
			if err := b.h.LinkSetUp(l); err != nil {
				return fmt.Errorf("kernel data plane: set XFRM interface %s up: %w", name, err)
			}
			b.link = l
			b.log.InfoContext(ctx, "adopted the XFRM interface", "interface", name, "if_id", x.Ifid)
			return nil
		}
		b.log.WarnContext(ctx, "replacing the group's XFRM interface: its if_id is not the configured one", "interface", name, "if_id", x.Ifid, "configured", b.cfg.IfID)
		if err := b.h.LinkDel(l); err != nil {
			return fmt.Errorf("kernel data plane: remove XFRM interface %s: %w", name, err)
		}
	}
	x := &netlink.Xfrmi{LinkAttrs: netlink.LinkAttrs{Name: name}, Ifid: b.cfg.IfID}
	if err := b.h.LinkAdd(x); err != nil {
		return fmt.Errorf("kernel data plane: create XFRM interface %s if_id %d: %w", name, b.cfg.IfID, err)
	}
	l, err := b.h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("kernel data plane: find XFRM interface %s: %w", name, err)
	}
	if err := b.h.LinkSetAlias(l, InterfaceAlias(b.cfg.Group)); err != nil {
		_ = b.h.LinkDel(l)
		return fmt.Errorf("kernel data plane: set the alias of XFRM interface %s: %w", name, err)
	}
	if err := b.h.LinkSetUp(l); err != nil {
		_ = b.h.LinkDel(l)
		return fmt.Errorf("kernel data plane: set XFRM interface %s up: %w", name, err)
	}
	b.link = l
	return nil
}

// Interface returns the name and index of the XFRM interface in
// route-based mode, or "" and 0.
func (b *Backend) Interface() (string, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.link == nil {
		return "", 0
	}
	return b.link.Attrs().Name, b.link.Attrs().Index
}

// InstallInbound implements xfrm.DataPlane.
func (b *Backend) InstallInbound(ctx context.Context, sa xfrm.SA) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("kernel data plane: closed")
	}
	if sa.SPI < 256 {
		return fmt.Errorf("install inbound SA %08x: SPIs 0-255 are reserved", sa.SPI)
	}
	if _, dup := b.sas[sa.SPI]; dup {
		return fmt.Errorf("install inbound SA %08x: already installed", sa.SPI)
	}
	if sa.Suite.CounterMode() && !b.cfg.AllowCounterMode {
		return fmt.Errorf("install inbound SA %08x: %s is a counter mode; with one key shared by many senders the kernel can repeat a nonce (RFC 6054), so it is refused; use AES-CBC with HMAC-SHA2", sa.SPI, sa.Suite)
	}
	own, err := newInstalled(sa)
	if err != nil {
		return fmt.Errorf("install inbound SA %08x: %w", sa.SPI, err)
	}
	var rec *seqRecord
	if b.leases != nil {
		// Reserved before any outbound state of the SA can send. On a
		// failure below the file stays: it may hold an earlier run's
		// numbers, and a reservation too high is never wrong. A
		// record that cannot be read is an error; one that cannot be
		// written is logged and listed (noteRecordErr), and receiving
		// goes on.
		l, err := b.leases.Acquire(leaseName(sa.SPI), uint64(b.cfg.SeqReserve))
		if err != nil {
			own.sa.Zero()
			return fmt.Errorf("install inbound SA %08x: %w", sa.SPI, err)
		}
		rec = &seqRecord{lease: l}
		if err := l.Err(); err != nil {
			// Not fatal: the kernel numbers its packets itself, and
			// addOut tries the reservation again.
			b.noteRecordErr(sa.SPI, rec, err)
		}
		if l.Start() > 0 {
			b.log.InfoContext(ctx, "SA installed again: its outbound sequence numbers continue above those an earlier run may have sent", "spi", fmt.Sprintf("%08x", sa.SPI), "from", uint64(l.Start())+1)
		}
	}
	var added []netip.Addr
	for _, u := range b.cfg.Underlay {
		b.ops++
		if err := b.xs.addState(newState{st: b.state(own, zeroOf(u), u)}); err != nil {
			err = b.explain(own, u, err)
			for _, a := range added {
				_ = b.delState(a, sa.SPI)
			}
			delete(b.seqWarnings, sa.SPI)
			own.sa.Zero()
			return fmt.Errorf("install inbound SA %08x on %s: %w", sa.SPI, u, err)
		}
		added = append(added, u)
	}
	b.sas[sa.SPI] = own
	if rec != nil {
		b.recs[sa.SPI] = rec
	}
	b.log.InfoContext(ctx, "installed inbound SA", "spi", fmt.Sprintf("%08x", sa.SPI), "suite", sa.Suite.String(), "underlay", b.cfg.Underlay)
	return nil
}

// SetOutbound implements xfrm.DataPlane.
func (b *Backend) SetOutbound(ctx context.Context, spi uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("kernel data plane: closed")
	}
	if _, ok := b.sas[spi]; !ok {
		return fmt.Errorf("set outbound SA %08x: not installed", spi)
	}
	old := b.outSPI
	if !b.peersSet {
		// The first SetPeers installs the policies with it; until then
		// the adopted ones stay as they are (blocking).
		b.outSPI = spi
		b.log.InfoContext(ctx, "outbound SA set; it is used once the peer table is", "spi", fmt.Sprintf("%08x", spi))
		return nil
	}
	if err := b.applyAll(ctx, b.local, spi); err != nil {
		// Some out policies may name spi already, others old: the
		// next SetPeers, SetOutbound or Remove reconciles.
		b.full = true
		return fmt.Errorf("set outbound SA %08x: %w", spi, err)
	}
	b.outSPI, b.full = spi, false
	b.log.InfoContext(ctx, "switched outbound SA", "spi", fmt.Sprintf("%08x", spi), "previous", fmt.Sprintf("%08x", old), "peers", len(b.table))
	return nil
}

// Remove implements xfrm.DataPlane.
func (b *Backend) Remove(ctx context.Context, spi uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("kernel data plane: closed")
	}
	in, ok := b.sas[spi]
	if !ok {
		return fmt.Errorf("remove SA %08x: not installed", spi)
	}
	next := b.outSPI
	if next == spi {
		next = 0
	}
	if b.peersSet && (b.outSPI == spi || b.full) {
		// Every out policy names next (or blocks) before the states
		// of spi go: after a failed SetOutbound some may name spi.
		if err := b.applyAll(ctx, b.local, next); err != nil {
			b.full = true
			return fmt.Errorf("remove SA %08x: stop sending with it: %w", spi, err)
		}
		b.full = false
	}
	b.outSPI = next
	var errs []error
	for k := range b.cur.out {
		if k.spi != spi {
			continue
		}
		if err := b.delOut(k); err != nil {
			errs = append(errs, fmt.Errorf("remove outbound SA %08x to %s: %w", spi, k.peer, err))
		}
	}
	errs = append(errs, b.removeInbound(spi)...)
	in.sa.Zero()
	delete(b.sas, spi)
	delete(b.seq, spi)
	if r := b.recs[spi]; r != nil {
		// The SA is gone for good: its numbers need no memory.
		if err := r.lease.Remove(); err != nil {
			errs = append(errs, fmt.Errorf("remove SA %08x: %w", spi, err))
		}
		delete(b.recs, spi)
		delete(b.seqWarnings, spi)
	}
	b.log.InfoContext(ctx, "removed SA", "spi", fmt.Sprintf("%08x", spi))
	return errors.Join(errs...)
}

// SetPeers implements xfrm.DataPlane. Only the prefixes that changed are
// touched, unless the local prefixes changed too (package
// documentation). A peer whose prefix contains an address given to
// Protect is left out, and named in the error, after the rest is applied.
func (b *Backend) SetPeers(ctx context.Context, local []netip.Prefix, peers []xfrm.Peer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("kernel data plane: closed")
	}
	b.wanted.Set(local, peers)
	return b.setPeers(ctx)
}

// Protect implements xfrm.Protector: a peer whose prefix contains one of
// addrs is left out of the peer table from now on, its block policies
// too (they would drop the control exchange). The last peer table given
// to SetPeers is applied again.
func (b *Backend) Protect(ctx context.Context, addrs []netip.Addr) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("kernel data plane: closed")
	}
	if !b.wanted.Protect(addrs) {
		return nil
	}
	return b.setPeers(ctx)
}

// setPeers applies the peer table last given to SetPeers (b.wanted);
// b.mu is held.
func (b *Backend) setPeers(ctx context.Context) error {
	local, peers, refused := b.wanted.Table()
	local = maskAll(local)
	if refused != nil {
		refused = fmt.Errorf("set peers: %w", refused)
		b.log.ErrorContext(ctx, "peers left out of the peer table", "err", refused)
	}
	table, skipped, err := b.peerTable(peers)
	if err != nil {
		return errors.Join(fmt.Errorf("set peers: %w", err), refused)
	}
	if skipped != nil {
		skipped = fmt.Errorf("set peers: %w", skipped)
		b.log.ErrorContext(ctx, "peers that cannot be served: their prefixes are blocked", "err", skipped)
		refused = errors.Join(refused, skipped)
	}
	if b.full || !slices.Equal(local, b.local) {
		old := b.table
		b.table = table
		if err := b.applyAll(ctx, local, b.outSPI); err != nil {
			b.table, b.full = old, true
			return errors.Join(fmt.Errorf("set peers: %w", err), refused)
		}
		b.local, b.full, b.peersSet = local, false, true
		b.uses = usesOf(table)
		b.log.InfoContext(ctx, "set peers", "local", local, "peers", len(table))
		return refused
	}
	var changed []netip.Prefix
	for r, u := range table {
		if old, ok := b.table[r]; !ok || old != u {
			changed = append(changed, r)
		}
	}
	for r := range b.table {
		if _, ok := table[r]; !ok {
			changed = append(changed, r)
		}
	}
	if len(changed) == 0 {
		return refused
	}
	want := newPlan()
	var oldKeys []policyKey
	uses := b.uses
	delta := map[netip.Addr]int{}
	for _, r := range changed {
		if u, ok := table[r]; ok {
			b.planPeer(&want, local, r, u, b.outSPI)
			if u.IsValid() {
				delta[u]++
			}
		}
		if u, ok := b.table[r]; ok {
			old := newPlan()
			b.planPeer(&old, local, r, u, b.outSPI)
			for k := range old.policies {
				oldKeys = append(oldKeys, k)
			}
			if u.IsValid() {
				delta[u]--
			}
		}
	}
	var gone []outKey
	for u, d := range delta {
		if uses[u]+d == 0 && uses[u] > 0 {
			for spi := range b.sas {
				if k := (outKey{spi, u}); b.cur.out[k].IsValid() {
					gone = append(gone, k)
				}
			}
		}
	}
	if err := b.apply(ctx, want, oldKeys, gone, nil); err != nil {
		b.full = true
		return errors.Join(fmt.Errorf("set peers: %w", err), refused)
	}
	for u, d := range delta {
		if uses[u] += d; uses[u] == 0 {
			delete(uses, u)
		}
	}
	b.table = table
	b.log.InfoContext(ctx, "set peers", "local", local, "peers", len(table), "changed", len(changed))
	return refused
}

// peerTable validates peers and maps each peer prefix (masked) to its
// underlay, leaving out this member's own underlays (peer discovery may
// list the member itself). A peer that cannot be served is not a reason
// to refuse the others, nor to leave its prefix unprotected: a prefix
// whose underlay has no local underlay address of its family, or that
// two peers with different underlays claim, maps to the zero Addr
// (blocked: block policies only, planPeer), and skipped names them. A
// peer with an invalid prefix is left out and named too. err is for a
// table that cannot be served at all (refuseOverlaps).
func (b *Backend) peerTable(peers []xfrm.Peer) (t map[netip.Prefix]netip.Addr, skipped, err error) {
	t = make(map[netip.Prefix]netip.Addr, len(peers))
	var (
		problems []error
		claimed  = map[netip.Prefix]netip.Addr{} // the first claim of a prefix in conflict
	)
	for _, p := range peers {
		u := p.Underlay.Unmap()
		if !p.Prefix.IsValid() {
			problems = append(problems, fmt.Errorf("peer %s: invalid prefix, left out", p))
			continue
		}
		if slices.Contains(b.cfg.Underlay, u) {
			continue
		}
		r := p.Prefix.Masked()
		if first, conflict := claimed[r]; conflict {
			if u != first {
				problems = append(problems, fmt.Errorf("prefix %s is also claimed via %s", r, u))
			}
			continue
		}
		if prev, dup := t[r]; dup && prev != u {
			problems = append(problems, fmt.Errorf("prefix %s is claimed by two peers, via %s and via %s: its traffic is blocked until one of them gives it up", r, prev, u))
			claimed[r] = prev
			t[r] = netip.Addr{}
			continue
		}
		if _, ok := b.underlayFor(u); !ok || !u.IsValid() {
			problems = append(problems, fmt.Errorf("peer %s via %s: no local underlay address of its family (have %v): its traffic is blocked", r, p.Underlay, b.cfg.Underlay))
			u = netip.Addr{}
		}
		t[r] = u
	}
	if err := refuseOverlaps(t); err != nil {
		return nil, nil, err
	}
	return t, errors.Join(problems...), nil
}

// refuseOverlaps refuses a peer table where one prefix contains another
// that leads to another peer: the kernel orders XFRM policies of one
// priority by insertion, not by prefix length, so it would not send each
// destination to the longest prefix's peer, and every policy of the group
// has one priority (the group's mark, xfrm/groupid). Nested prefixes with
// the same peer are fine: either policy sends to it. The cost is a map
// look-up per prefix and shorter length present.
func refuseOverlaps(t map[netip.Prefix]netip.Addr) error {
	lengths := map[bool]map[int]bool{true: {}, false: {}}
	for r := range t {
		lengths[r.Addr().Is4()][r.Bits()] = true
	}
	var errs []error
	byAddr := func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	}
	for _, r := range slices.SortedFunc(maps.Keys(t), byAddr) {
		if !t[r].IsValid() {
			continue // blocked: never sent to a peer
		}
		for bits := range lengths[r.Addr().Is4()] {
			if bits >= r.Bits() {
				continue
			}
			outer, _ := r.Addr().Prefix(bits)
			if u, ok := t[outer]; ok && u.IsValid() && u != t[r] {
				errs = append(errs, fmt.Errorf("peer prefix %s (via %s) lies inside %s (via %s): the kernel data plane cannot send each destination to the peer of its longest prefix (XFRM policies of one priority have no prefix-length order), so it refuses the peer table; give each member prefixes that do not overlap another's (the controller's bgp policy), or use the userspace data plane, which matches the longest prefix",
					r, t[r], outer, u))
			}
		}
	}
	return errors.Join(errs...)
}

func usesOf(t map[netip.Prefix]netip.Addr) map[netip.Addr]int {
	uses := map[netip.Addr]int{}
	for _, u := range t {
		if u.IsValid() {
			uses[u]++
		}
	}
	return uses
}

func maskAll(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = p.Masked()
	}
	return out
}

// applyAll moves the kernel to the full plan for (local, b.table,
// outSPI).
func (b *Backend) applyAll(ctx context.Context, local []netip.Prefix, outSPI uint32) error {
	want := b.planTable(local, b.table, outSPI)
	oldKeys := make([]policyKey, 0, len(b.cur.policies))
	for k := range b.cur.policies {
		oldKeys = append(oldKeys, k)
	}
	oldOut := make([]outKey, 0, len(b.cur.out))
	for k := range b.cur.out {
		oldOut = append(oldOut, k)
	}
	uses := usesOf(b.table)
	return b.apply(ctx, want, oldKeys, oldOut, func(k outKey) bool {
		_, held := b.sas[k.spi]
		return held && uses[k.peer] > 0
	})
}

// apply moves the objects in scope from b.cur to want, in an order that
// keeps traffic flowing: new outbound states, then new and changed
// policies, then the policies of oldKeys that want lacks, then the
// outbound states of oldOut that want lacks, except those keep reports.
func (b *Backend) apply(ctx context.Context, want plan, oldKeys []policyKey, oldOut []outKey, keep func(outKey) bool) error {
	retiring := func(k outKey) bool {
		_, wanted := want.out[k]
		_, have := b.cur.out[k]
		return !wanted && have && (keep == nil || !keep(k))
	}
	// 0. The numbers of the states this change retires, of the SPIs it
	// adds states for, read before the new states start: a peer that
	// moved to another underlay keeps its replay window for this
	// member (per SPI and this member's address, both unchanged), so
	// the state toward its new underlay must start above what the one
	// toward the old sent. The old state still sends until step 2
	// switches its policies: SeqMargin covers that.
	adding := map[uint32]bool{}
	for k := range want.out {
		if _, have := b.cur.out[k]; !have {
			adding[k.spi] = true
		}
	}
	for _, k := range oldOut {
		if !adding[k.spi] || !retiring(k) {
			continue
		}
		s, err := b.xs.getState(k.peer, k.spi)
		switch {
		case err == nil:
			b.noteSeq(k.spi, s.oseq)
		case b.recs[k.spi] != nil:
			// Unread, but never beyond the reservation on disk.
			b.noteSeq(k.spi, b.recs[k.spi].lease.Reserved())
		default:
			// Nothing tells where the new state must start: refuse
			// rather than send numbers the peer has seen.
			return fmt.Errorf("read the last sequence number of outbound SA %08x to %s before replacing it: %w", k.spi, k.peer, err)
		}
	}
	// 1. Outbound states.
	var addedOut []outKey
	undo := func() {
		for _, k := range addedOut {
			_ = b.delOut(k)
		}
	}
	for k, src := range want.out {
		if _, have := b.cur.out[k]; have {
			continue
		}
		if err := b.addOut(k, src); err != nil {
			undo()
			return err
		}
		addedOut = append(addedOut, k)
	}
	// 2. Policies, added or changed.
	for _, k := range sortedKeys(want.policies) {
		p := want.policies[k]
		prev, have := b.cur.policies[k]
		switch {
		case !have:
			b.ops++
			if err := b.h.XfrmPolicyAdd(&p); err != nil {
				if errors.Is(err, unix.EEXIST) {
					err = fmt.Errorf("another policy with the same selector exists (charon's?): %w", err)
				}
				return fmt.Errorf("add policy %s: %w", k, err)
			}
		case !sameTmpls(prev, p) || prev.Priority != p.Priority:
			b.ops++
			if err := b.h.XfrmPolicyUpdate(&p); err != nil {
				return fmt.Errorf("update policy %s: %w", k, err)
			}
		default:
			continue
		}
		b.cur.policies[k] = p
	}
	// 3. Policies no longer wanted.
	var errs []error
	sortKeys(oldKeys)
	for _, k := range oldKeys {
		if _, keep := want.policies[k]; keep {
			continue
		}
		p, have := b.cur.policies[k]
		if !have {
			continue
		}
		b.ops++
		if err := b.h.XfrmPolicyDel(&p); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete policy %s: %w", k, err))
			continue
		}
		delete(b.cur.policies, k)
	}
	// 4. Outbound states no longer used. The states of an earlier
	// outbound SA that is still installed stay until Remove (keep): a
	// packet whose route was looked up just before the policy update may
	// still be on its way through the old state, and the kernel drops it
	// (EINVAL) if that state is gone. States of peers that left go now.
	for _, k := range oldOut {
		if !retiring(k) {
			continue
		}
		if err := b.delOut(k); err != nil {
			errs = append(errs, fmt.Errorf("delete outbound SA %08x to %s: %w", k.spi, k.peer, err))
		}
	}
	if len(errs) > 0 {
		b.log.WarnContext(ctx, "data plane cleanup incomplete", "err", errors.Join(errs...))
	}
	return errors.Join(errs...)
}

// addOut adds the outbound state k from src, continuing the sequence
// numbers of its SPI, with the soft packet limit.
func (b *Backend) addOut(k outKey, src netip.Addr) error {
	in := b.sas[k.spi]
	oseq := b.seq[k.spi]
	if r := b.recs[k.spi]; r != nil {
		oseq = max(oseq, r.lease.Start())
		b.ensureReserved(k.spi, oseq)
	}
	soft := uint64(1) // already past the limit: report at once
	if oseq < b.cfg.SeqSoftLimit {
		soft = uint64(b.cfg.SeqSoftLimit - oseq)
	}
	b.ops++
	if err := b.xs.addState(newState{st: b.state(in, src, k.peer), oseq: oseq, softPackets: soft}); err != nil {
		return fmt.Errorf("install outbound SA %08x to %s: %w", k.spi, k.peer, b.explain(in, src, err))
	}
	b.cur.out[k] = src
	return nil
}

// delOut deletes the outbound state k after noting its last sequence
// number, so that a state added again for the SPI continues after it.
// Every caller has made the state's out policies block or deleted them
// before (SeqMargin).
func (b *Backend) delOut(k outKey) error {
	if s, err := b.xs.getState(k.peer, k.spi); err == nil {
		b.noteSeq(k.spi, s.oseq)
	} else if r := b.recs[k.spi]; r != nil {
		r.unread = true
	}
	b.ops++
	if err := b.delState(k.peer, k.spi); err != nil {
		return err
	}
	delete(b.cur.out, k)
	delete(b.warnings, k)
	return nil
}

// noteSeq notes the last sequence number read from an outbound state of
// spi that is deleted next, SeqMargin added for the packets that may still
// take a number until then (never beyond 2^32-1).
func (b *Backend) noteSeq(spi, oseq uint32) {
	used := uint32(min(uint64(oseq)+SeqMargin, seqlease.Max))
	if prev := b.seq[spi]; used > prev {
		if r := b.recs[spi]; r != nil {
			// Skipped, not sent: out of the record's rate.
			r.skipped += used - max(oseq, prev)
		}
		b.seq[spi] = used
	}
}

// state builds the XFRM state of in from src to dst. An unspecified src
// makes an inbound state that accepts any source.
func (b *Backend) state(in installed, src, dst netip.Addr) *netlink.XfrmState {
	return &netlink.XfrmState{
		Src: net.IP(src.AsSlice()), Dst: net.IP(dst.AsSlice()),
		Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL,
		Spi: int(in.sa.SPI), Reqid: int(b.cfg.ReqID), ReplayWindow: 0,
		Crypt: in.algs.crypt, Auth: in.algs.auth, Aead: in.algs.aead,
		Ifid: int(b.cfg.IfID),
		// No selector: AF_UNSPEC, so one state carries IPv4 and IPv6.
	}
}

// delState deletes the ESP state with destination dst and SPI spi (and the
// configured if_id). A state that is already gone (ESRCH, ENOENT) counts
// as deleted.
func (b *Backend) delState(dst netip.Addr, spi uint32) error {
	return b.delStateIf(dst, spi, b.cfg.IfID)
}

func (b *Backend) delStateIf(dst netip.Addr, spi, ifid uint32) error {
	return delState(b.h, dst, spi, ifid)
}

func delState(h *netlink.Handle, dst netip.Addr, spi, ifid uint32) error {
	err := h.XfrmStateDel(&netlink.XfrmState{Dst: net.IP(dst.AsSlice()), Proto: netlink.XFRM_PROTO_ESP, Spi: int(spi), Ifid: int(ifid)})
	if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// removeInbound deletes the inbound states of spi, one per underlay
// address, going on after a failure, and returns the failures.
func (b *Backend) removeInbound(spi uint32) []error {
	var errs []error
	for _, u := range b.cfg.Underlay {
		b.ops++
		if err := b.delState(u, spi); err != nil {
			errs = append(errs, fmt.Errorf("delete inbound SA %08x on %s: %w", spi, u, err))
		}
	}
	return errs
}

// explain turns the kernel's ENOSYS or ENOENT ("no such algorithm") into
// an error that names the missing algorithm, found by probing the
// encryption algorithm alone, with a zero key of the same length, in a
// short-lived state (SPI probeSPI).
func (b *Backend) explain(in installed, at netip.Addr, err error) error {
	if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	a, suite := in.algs, in.sa.Suite
	if a.aead != nil {
		return fmt.Errorf("the kernel lacks the ESP algorithm %s (%s); load its module: %w", a.aead.Name, suite, err)
	}
	// The probe needs a key of the right length, not the SA's.
	probe := &netlink.XfrmState{
		Src: net.IP(zeroOf(at).AsSlice()), Dst: net.IP(at.AsSlice()),
		Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL,
		Spi: probeSPI, Reqid: int(b.cfg.ReqID), Ifid: int(b.cfg.IfID),
		Crypt: &netlink.XfrmStateAlgo{Name: a.crypt.Name, Key: make([]byte, len(a.crypt.Key))},
	}
	perr := b.xs.addState(newState{st: probe})
	if perr == nil {
		_ = b.delState(at, probeSPI)
		return fmt.Errorf("the kernel lacks the ESP integrity algorithm %s (%s); load its module: %w", a.auth.Name, suite, err)
	}
	if errors.Is(perr, unix.ENOSYS) || errors.Is(perr, unix.ENOENT) {
		return fmt.Errorf("the kernel lacks the ESP encryption algorithm %s (%s); load its module: %w", a.crypt.Name, suite, err)
	}
	return fmt.Errorf("the kernel lacks %s or %s (%s): %w", a.crypt.Name, a.auth.Name, suite, err)
}

// Counters implements xfrm.DataPlane. Inbound figures come from the
// inbound states (InErrors counts integrity failures and replays); outbound
// figures are the sums over the outbound states of every peer. The kernel
// keeps no per-state count of outbound errors, so OutErrors stays 0.
//
// With Config.SeqLeaseDir it also keeps the SAs' sequence-number records
// ahead of the states' numbers (the periodic check then has nothing to
// read).
func (b *Backend) Counters(ctx context.Context) ([]xfrm.Counters, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, errors.New("kernel data plane: closed")
	}
	states, err := b.xs.listStates()
	if err != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("counters: %w", err)
	}
	pending := b.planRecords(states, time.Now())
	defer b.writeRecords(pending)
	defer b.mu.Unlock()
	byspi := map[uint32]*xfrm.Counters{}
	spis := make([]uint32, 0, len(b.sas))
	for spi := range b.sas {
		byspi[spi] = &xfrm.Counters{SPI: spi}
		spis = append(spis, spi)
	}
	slices.Sort(spis)
	for _, s := range states {
		c, ok := byspi[s.spi]
		if !ok || s.reqid != b.cfg.ReqID || s.ifid != b.cfg.IfID {
			continue
		}
		if !s.src.IsValid() || s.src.IsUnspecified() {
			c.InPackets += s.packets
			c.InBytes += s.bytes
			c.InErrors += uint64(s.failed) + uint64(s.replay)
		} else {
			c.OutPackets += s.packets
			c.OutBytes += s.bytes
		}
	}
	out := make([]xfrm.Counters, 0, len(spis))
	for _, spi := range spis {
		out = append(out, *byspi[spi])
	}
	return out, nil
}

// Warnings lists the outbound states whose sequence numbers are running
// out (the kernel's soft expiry), for the member's status.
func (b *Backend) Warnings() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.warnings)+len(b.seqWarnings))
	for _, w := range b.warnings {
		out = append(out, w)
	}
	for _, w := range b.seqWarnings {
		out = append(out, w)
	}
	sort.Strings(out)
	return out
}

// Close implements xfrm.DataPlane: it keeps the kill switch. Every out
// policy blocks, the states are deleted (their keys leave the kernel), the
// policies and the XFRM interface stay, and the backend's copies of the
// keys are zeroed. With Config.SeqLeaseDir each SA's record then holds the
// highest outbound sequence number read from its states before they went,
// plus SeqMargin (package documentation, "Sequence numbers").
//
// A Close or Flush called while another runs returns once that one has
// finished.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.done
		return nil
	}
	defer close(b.done)
	defer b.mu.Unlock()
	b.closed = true
	b.stopMonitor()
	b.stopSeqChecks()
	// Every out policy blocks before its states go (a policy naming a
	// missing state would make the kernel ask the key managers for one).
	// No policy is deleted, whatever the peer table: a backend that
	// adopted its group's policies and closes before its first SetPeers
	// keeps them all.
	var errs []error
	for _, k := range sortedKeys(b.cur.policies) {
		p := b.cur.policies[k]
		if len(p.Tmpls) == 0 || k.dir != netlink.XFRM_DIR_OUT {
			continue
		}
		p.Tmpls, p.Action = nil, netlink.XFRM_POLICY_BLOCK
		b.ops++
		if err := b.h.XfrmPolicyUpdate(&p); err != nil {
			errs = append(errs, fmt.Errorf("make policy %s block: %w", k, err))
			continue
		}
		b.cur.policies[k] = p
	}
	for k := range b.cur.out {
		if err := b.delOut(k); err != nil {
			errs = append(errs, fmt.Errorf("delete outbound SA %08x to %s: %w", k.spi, k.peer, err))
		}
	}
	if err := b.settleRecords(); err != nil {
		errs = append(errs, err)
	}
	for spi, in := range b.sas {
		errs = append(errs, b.removeInbound(spi)...)
		in.sa.Zero()
	}
	b.release()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kernel data plane: close: %w", err)
	}
	b.log.Info("closed; the kill switch stays", "policies", len(b.cur.policies))
	return nil
}

// Flush implements xfrm.DataPlane: it removes every object with the
// group's marks (the policies and the states, whoever's run installed
// them) and the XFRM interface, and closes the backend. The SAs'
// sequence-number records stay, as the userspace data plane's do: the
// group may come back with the same SA.
//
// On a backend already closed it removes the same objects by the group's
// marks alone, as FlushGroup does (mpsactl flush).
func (b *Backend) Flush(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.done
		n, err := FlushGroup(ctx, FlushConfig{NetNS: b.cfg.NetNS, Group: b.cfg.Group, ReqID: b.cfg.ReqID, Priority: b.cfg.Priority})
		if err != nil {
			return fmt.Errorf("kernel data plane: flush after close: %w", err)
		}
		b.log.InfoContext(ctx, "flushed after close: kill switch, states and interface removed", "objects", n)
		return nil
	}
	defer close(b.done)
	defer b.mu.Unlock()
	b.closed = true
	b.stopMonitor()
	b.stopSeqChecks()
	n, err := sweep(b.h, b.xs, b.marks(), b.link, func(s stateInfo) {
		if s.src.IsValid() && !s.src.IsUnspecified() {
			// Read after the group's policies are gone.
			b.noteSeq(s.spi, s.oseq)
		}
	})
	// The records stay, at least at their reservations (a state the
	// sweep missed goes unread): the group may come back with the same
	// SA before they are pruned.
	for _, r := range b.recs {
		r.unread = true
	}
	err = errors.Join(err, b.settleRecords())
	for _, in := range b.sas {
		in.sa.Zero()
	}
	b.release()
	if err != nil {
		return fmt.Errorf("kernel data plane: flush: %w", err)
	}
	b.log.InfoContext(ctx, "flushed: kill switch, states and interface removed", "objects", n)
	return nil
}

// release forgets the installed objects and closes the netlink sockets.
func (b *Backend) release() {
	b.sas, b.cur, b.link = nil, plan{}, nil
	b.h.Close()
	b.xs.close()
}

// sweep deletes the policies and states with the marks m, and link if not
// nil, going on after a failure; it returns how many it deleted. Policies
// at m's priorities that do not have the group's shape are left alone and
// reported. Each state to delete is handed to seen (if not nil) first,
// as read after the policies were deleted.
func sweep(h *netlink.Handle, xs *xfrmSocket, m marks, link netlink.Link, seen func(stateInfo)) (int, error) {
	var errs []error
	n := 0
	pols, err := xs.listPolicies()
	if err != nil {
		errs = append(errs, fmt.Errorf("list policies: %w", err))
	}
	for _, p := range pols {
		marked, ours := m.classify(p)
		switch {
		case !marked:
			continue
		case !ours:
			errs = append(errs, foreignPolicy(p, m))
			continue
		}
		if err := h.XfrmPolicyDel(&p); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete policy %s %v -> %v: %w", p.Dir, p.Src, p.Dst, err))
			continue
		}
		n++
	}
	states, err := xs.listStates()
	if err != nil {
		errs = append(errs, err)
	}
	for _, s := range states {
		marked, ours := m.classifyState(s)
		switch {
		case !marked:
			continue
		case !ours:
			errs = append(errs, fmt.Errorf("state %08x to %s has reqid %#x but is not a tunnel-mode ESP state; left alone", s.spi, s.dst, m.reqID))
			continue
		}
		if seen != nil {
			seen(s)
		}
		if err := delState(h, s.dst, s.spi, s.ifid); err != nil {
			errs = append(errs, fmt.Errorf("delete state %08x to %s: %w", s.spi, s.dst, err))
			continue
		}
		n++
	}
	if link != nil {
		if err := h.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("delete XFRM interface %s: %w", link.Attrs().Name, err))
		} else {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// FlushConfig says which group's objects FlushGroup removes.
type FlushConfig struct {
	// NetNS is the network namespace, as in Config.
	NetNS string
	// Group is the group's name: its XFRM interface is the one with
	// alias InterfaceAlias(Group).
	Group string
	// ReqID and Priority are the group's marks, as in Config.
	ReqID, Priority uint32
}

// FlushGroup removes a group's kernel objects without a Backend, for an
// operator while no mpsad serves the group (mpsactl flush): every policy
// and state with the group's marks and its XFRM interface. It returns how
// many objects it removed. Objects with the marks that are not mpsa's are
// left alone and reported in the error.
func FlushGroup(ctx context.Context, fc FlushConfig) (int, error) {
	ns := netns.None()
	if fc.NetNS != "" {
		var err error
		if ns, err = netns.GetFromPath(fc.NetNS); err != nil {
			return 0, fmt.Errorf("open network namespace %s: %w", fc.NetNS, err)
		}
		defer ns.Close()
	}
	h, xs, err := openHandles(ns)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	defer xs.close()
	links, err := h.LinkList()
	if err != nil {
		return 0, fmt.Errorf("list links: %w", err)
	}
	n := 0
	var errs []error
	for _, l := range links {
		if l.Type() != "xfrm" || l.Attrs().Alias != InterfaceAlias(fc.Group) {
			continue
		}
		if err := h.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete XFRM interface %s: %w", l.Attrs().Name, err))
			continue
		}
		n++
	}
	swept, err := sweep(h, xs, marks{reqID: fc.ReqID, priority: fc.Priority}, nil, nil)
	return n + swept, errors.Join(append(errs, err)...)
}

// startMonitor subscribes to the kernel's expiry reports in ns and logs
// and records the soft expiries of the backend's outbound states.
func (b *Backend) startMonitor(ns netns.NsHandle) error {
	s, err := nl.SubscribeAt(ns, netns.None(), unix.NETLINK_XFRM, nl.XFRMNLGRP_EXPIRE)
	if err != nil {
		return fmt.Errorf("kernel data plane: subscribe to XFRM expiry reports: %w", err)
	}
	b.mon, b.monDone = s, make(chan struct{})
	go func() {
		defer close(b.monDone)
		for {
			msgs, _, err := s.Receive()
			if err != nil {
				if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
					continue
				}
				return // closed
			}
			for _, m := range msgs {
				if m.Header.Type == nl.XFRM_MSG_EXPIRE && len(m.Data) > nl.SizeofXfrmUsersaInfo {
					if st, ok := parseState(m.Data[:nl.SizeofXfrmUsersaInfo]); ok {
						b.onExpire(st, m.Data[nl.SizeofXfrmUsersaInfo] != 0)
					}
				}
			}
		}
	}()
	return nil
}

// stopMonitor closes the expiry subscription and waits for its goroutine.
// b.mu is held; the goroutine takes it only in onExpire, which gives up
// once b.closed is set.
func (b *Backend) stopMonitor() {
	if b.mon == nil {
		return
	}
	b.mon.Close()
	b.mu.Unlock()
	<-b.monDone
	b.mu.Lock()
	b.mon = nil
}

// onExpire records an expiry report for one of the backend's outbound
// states.
func (b *Backend) onExpire(st stateInfo, hard bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || st.reqid != b.cfg.ReqID || !st.src.IsValid() || st.src.IsUnspecified() {
		return
	}
	k := outKey{st.spi, st.dst}
	if hard {
		b.log.Error("outbound SA expired in the kernel", "spi", fmt.Sprintf("%08x", st.spi), "peer", st.dst)
		return
	}
	w := fmt.Sprintf("outbound SA %08x to %s: sequence numbers running out (%d packets sent since it was added, soft limit at sequence number %d of 2^32-1); nothing can be sent with it after that until the controller rekeys", st.spi, st.dst, st.packets, b.cfg.SeqSoftLimit)
	b.warnings[k] = w
	b.log.Warn("outbound SA near the end of its sequence numbers: the kernel drops its packets at 2^32-1; rekey the group (mpsactl rekey on the controller) or shorten rekey_time", "spi", fmt.Sprintf("%08x", st.spi), "peer", st.dst, "packets", st.packets)
}
