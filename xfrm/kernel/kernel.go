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
//     same family, with the same SPI and keys.
//   - for every prefix pair (l in L, p in P) of the same family: an out
//     policy l -> p whose template names the peer's underlay and the
//     outbound SPI, and in and fwd policies p -> l whose template accepts
//     any of the installed inbound SPIs. Until an outbound SA is set, the
//     out policies block, so nothing for a peer leaves in plaintext.
//   - when L is not empty, for every peer prefix p with a prefix of its
//     family in L: a fallback out policy from any source of p's family to
//     p that blocks, at priority Priority+1 (less preferred than the
//     policies above). Traffic the member originates from an address
//     outside L (its underlay address, say) to a peer's LAN is dropped
//     instead of leaving in plaintext.
//
// In route-based mode (Config.Interface set) the backend also creates an
// XFRM interface with Config.IfID and puts that if_id on every state and
// policy: only traffic the operator routes into the interface is
// protected, and what arrives appears on it.
//
// # Recognizing its own objects
//
// Every state carries Config.ReqID (default DefaultReqID) and every policy
// has priority Config.Priority (default DefaultPriority) and either
// templates with that reqid or, for the blocking out policies, no template;
// the fallback block policies have priority Config.Priority+1 and no
// template.
// On start the backend deletes the states and policies that match these
// marks (and the configured if_id), which are what an earlier run left
// behind after a crash, and nothing else. Two backends in one network
// namespace must use different ReqIDs.
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
package kernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/xfrm"
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

// Config configures the kernel backend.
type Config struct {
	// NetNS is the path of the network namespace to work in
	// ("/run/netns/NAME", "/proc/PID/ns/net"); empty means the namespace
	// of the calling thread when New runs.
	NetNS string
	// Underlay are the member's own underlay addresses: one inbound state
	// each, and the source of the outbound state to a peer of the same
	// family. At least one is required.
	Underlay []netip.Addr
	// ReqID marks the states and policy templates; DefaultReqID if 0.
	ReqID uint32
	// Priority is the priority of the policies; DefaultPriority if 0.
	Priority uint32
	// Interface, when not empty, selects route-based mode: the backend
	// creates an XFRM interface of this name with IfID (replacing a
	// leftover XFRM interface of the same name), sets it up, and removes
	// it on Close. Addresses and routes on it are the operator's.
	Interface string
	// IfID is the XFRM interface ID for route-based mode; required, and
	// not 0, when Interface is set.
	IfID uint32
	// AllowCounterMode permits AES-GCM, AES-CTR and ChaCha20-Poly1305.
	// With one key shared by many senders, the kernel's per-state random
	// salt and per-sender sequence numbers can repeat a nonce (RFC 6054),
	// so they are refused unless this is set (for tests and lab use).
	AllowCounterMode bool
	// Logger receives the backend's logs; slog.Default() if nil. No key
	// is ever logged.
	Logger *slog.Logger
}

// Backend is the kernel data plane. It implements xfrm.DataPlane.
type Backend struct {
	cfg Config
	log *slog.Logger
	h   *netlink.Handle
	xs  *xfrmSocket

	mu     sync.Mutex
	closed bool
	sas    map[uint32]installed // installed SAs, keys copied
	outSPI uint32
	local  []netip.Prefix
	peers  []xfrm.Peer
	cur    plan // what is in the kernel now
	link   netlink.Link
}

var _ xfrm.DataPlane = (*Backend)(nil)

// New opens netlink in the configured namespace, removes leftovers of an
// earlier run (see the package documentation), and in route-based mode
// creates the XFRM interface.
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
	log = log.With("dataplane", "xfrm", "reqid", fmt.Sprintf("%#x", cfg.ReqID))

	ns := netns.None()
	if cfg.NetNS != "" {
		var err error
		if ns, err = netns.GetFromPath(cfg.NetNS); err != nil {
			return nil, fmt.Errorf("kernel data plane: open network namespace %s: %w", cfg.NetNS, err)
		}
		defer ns.Close()
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE, unix.NETLINK_XFRM)
	if err != nil {
		return nil, fmt.Errorf("kernel data plane: open netlink: %w", err)
	}
	sock, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_XFRM)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("kernel data plane: open netlink: %w", err)
	}
	xs := &xfrmSocket{sockets: map[int]*nl.SocketHandle{unix.NETLINK_XFRM: {Socket: sock}}}
	b := &Backend{
		cfg: cfg, log: log, h: h, xs: xs,
		sas: map[uint32]installed{},
		cur: plan{policies: map[policyKey]netlink.XfrmPolicy{}, out: map[outKey]netip.Addr{}},
	}
	err = b.removeLeftovers(ctx)
	if err == nil && cfg.Interface != "" {
		err = b.createInterface()
	}
	if err != nil {
		h.Close()
		xs.close()
		return nil, err
	}
	return b, nil
}

// removeLeftovers deletes the states, policies and XFRM interface that
// carry this configuration's marks.
func (b *Backend) removeLeftovers(ctx context.Context) error {
	pols, err := b.h.XfrmPolicyList(netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("kernel data plane: list policies: %w", err)
	}
	n := 0
	for _, p := range pols {
		if !b.ours(p) {
			continue
		}
		if err := b.h.XfrmPolicyDel(&p); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("kernel data plane: remove leftover policy %s %v -> %v: %w", p.Dir, p.Src, p.Dst, err)
		}
		n++
	}
	states, err := b.h.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("kernel data plane: list states: %w", err)
	}
	for _, s := range states {
		if !b.ownState(s) {
			continue
		}
		dst, _ := netip.AddrFromSlice(s.Dst)
		if err := b.delState(dst.Unmap(), uint32(s.Spi)); err != nil {
			return fmt.Errorf("kernel data plane: remove leftover state %08x to %s: %w", uint32(s.Spi), s.Dst, err)
		}
		n++
	}
	if b.cfg.Interface != "" {
		if l, err := b.h.LinkByName(b.cfg.Interface); err == nil {
			if l.Type() != "xfrm" {
				return fmt.Errorf("kernel data plane: interface %s exists and is a %s, not an XFRM interface", b.cfg.Interface, l.Type())
			}
			if err := b.h.LinkDel(l); err != nil {
				return fmt.Errorf("kernel data plane: remove leftover interface %s: %w", b.cfg.Interface, err)
			}
			n++
		}
	}
	if n > 0 {
		b.log.InfoContext(ctx, "removed leftovers of an earlier run", "objects", n)
	}
	return nil
}

func (b *Backend) createInterface() error {
	x := &netlink.Xfrmi{LinkAttrs: netlink.LinkAttrs{Name: b.cfg.Interface}, Ifid: b.cfg.IfID}
	if err := b.h.LinkAdd(x); err != nil {
		return fmt.Errorf("kernel data plane: create XFRM interface %s if_id %d: %w", b.cfg.Interface, b.cfg.IfID, err)
	}
	l, err := b.h.LinkByName(b.cfg.Interface)
	if err != nil {
		return fmt.Errorf("kernel data plane: find XFRM interface %s: %w", b.cfg.Interface, err)
	}
	if err := b.h.LinkSetUp(l); err != nil {
		_ = b.h.LinkDel(l)
		return fmt.Errorf("kernel data plane: set XFRM interface %s up: %w", b.cfg.Interface, err)
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
	var added []netip.Addr
	for _, u := range b.cfg.Underlay {
		if err := b.xs.addState(b.state(own, zeroOf(u), u)); err != nil {
			err = b.explain(own, u, err)
			for _, a := range added {
				_ = b.delState(a, sa.SPI)
			}
			own.sa.Zero()
			return fmt.Errorf("install inbound SA %08x on %s: %w", sa.SPI, u, err)
		}
		added = append(added, u)
	}
	b.sas[sa.SPI] = own
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
	if err := b.apply(ctx, b.local, b.peers, spi); err != nil {
		return fmt.Errorf("set outbound SA %08x: %w", spi, err)
	}
	b.outSPI = spi
	b.log.InfoContext(ctx, "switched outbound SA", "spi", fmt.Sprintf("%08x", spi), "previous", fmt.Sprintf("%08x", old), "peers", len(b.peers))
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
	if b.outSPI == spi {
		if err := b.apply(ctx, b.local, b.peers, 0); err != nil {
			return fmt.Errorf("remove SA %08x: stop sending with it: %w", spi, err)
		}
		b.outSPI = 0
	}
	var errs []error
	for k := range b.cur.out {
		if k.spi != spi {
			continue
		}
		if err := b.delState(k.peer, k.spi); err != nil {
			errs = append(errs, fmt.Errorf("remove outbound SA %08x to %s: %w", spi, k.peer, err))
			continue
		}
		delete(b.cur.out, k)
	}
	errs = append(errs, b.removeInbound(spi)...)
	in.sa.Zero()
	delete(b.sas, spi)
	b.log.InfoContext(ctx, "removed SA", "spi", fmt.Sprintf("%08x", spi))
	return errors.Join(errs...)
}

// SetPeers implements xfrm.DataPlane.
func (b *Backend) SetPeers(ctx context.Context, local []netip.Prefix, peers []xfrm.Peer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("kernel data plane: closed")
	}
	local = slices.Clone(local)
	peers = slices.Clone(peers)
	for i := range peers {
		peers[i].Underlay = peers[i].Underlay.Unmap()
		if !peers[i].Prefix.IsValid() || !peers[i].Underlay.IsValid() {
			return fmt.Errorf("set peers: invalid peer %s", peers[i])
		}
	}
	if err := b.apply(ctx, local, peers, b.outSPI); err != nil {
		return fmt.Errorf("set peers: %w", err)
	}
	b.local, b.peers = local, peers
	b.log.InfoContext(ctx, "set peers", "local", local, "peers", len(peers))
	return nil
}

// apply moves the kernel from b.cur to the plan for (local, peers,
// outSPI) in an order that keeps traffic flowing: new outbound states,
// then new and changed policies, then removed policies, then outbound
// states no longer used.
func (b *Backend) apply(ctx context.Context, local []netip.Prefix, peers []xfrm.Peer, outSPI uint32) error {
	want, err := b.planFor(local, peers, outSPI)
	if err != nil {
		return err
	}
	// 1. Outbound states.
	var addedOut []outKey
	undo := func() {
		for _, k := range addedOut {
			_ = b.delState(k.peer, k.spi)
			delete(b.cur.out, k)
		}
	}
	for k, src := range want.out {
		if _, have := b.cur.out[k]; have {
			continue
		}
		in := b.sas[k.spi]
		if err := b.xs.addState(b.state(in, src, k.peer)); err != nil {
			undo()
			return fmt.Errorf("install outbound SA %08x to %s: %w", k.spi, k.peer, b.explain(in, src, err))
		}
		addedOut = append(addedOut, k)
		b.cur.out[k] = src
	}
	// 2. Policies, added or changed.
	for _, k := range sortedKeys(want.policies) {
		p := want.policies[k]
		prev, have := b.cur.policies[k]
		switch {
		case !have:
			if err := b.h.XfrmPolicyAdd(&p); err != nil {
				if errors.Is(err, unix.EEXIST) {
					err = fmt.Errorf("another policy with the same selector exists (charon's?): %w", err)
				}
				return fmt.Errorf("add policy %s: %w", k, err)
			}
		case !sameTmpls(prev, p):
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
	for _, k := range sortedKeys(b.cur.policies) {
		if _, keep := want.policies[k]; keep {
			continue
		}
		p := b.cur.policies[k]
		if err := b.h.XfrmPolicyDel(&p); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete policy %s: %w", k, err))
			continue
		}
		delete(b.cur.policies, k)
	}
	// 4. Outbound states no longer used. The states of an earlier
	// outbound SA that is still installed stay until Remove: a packet
	// whose route was looked up just before the policy update may still be
	// on its way through the old state, and the kernel drops it (EINVAL)
	// if that state is gone. States of peers that left go now.
	stillPeer := map[netip.Addr]bool{}
	for k := range want.out {
		stillPeer[k.peer] = true
	}
	for k := range b.cur.out {
		if _, keep := want.out[k]; keep {
			continue
		}
		if _, held := b.sas[k.spi]; held && stillPeer[k.peer] {
			continue
		}
		if err := b.delState(k.peer, k.spi); err != nil {
			errs = append(errs, fmt.Errorf("delete outbound SA %08x to %s: %w", k.spi, k.peer, err))
			continue
		}
		delete(b.cur.out, k)
	}
	if len(errs) > 0 {
		b.log.WarnContext(ctx, "data plane cleanup incomplete", "err", errors.Join(errs...))
	}
	return errors.Join(errs...)
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
	err := b.h.XfrmStateDel(&netlink.XfrmState{Dst: net.IP(dst.AsSlice()), Proto: netlink.XFRM_PROTO_ESP, Spi: int(spi), Ifid: int(b.cfg.IfID)})
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
		if err := b.delState(u, spi); err != nil {
			errs = append(errs, fmt.Errorf("delete inbound SA %08x on %s: %w", spi, u, err))
		}
	}
	return errs
}

// explain turns the kernel's ENOSYS or ENOENT ("no such algorithm") into
// an error that names the missing algorithm, found by probing the
// encryption algorithm alone with a short-lived state (SPI probeSPI).
func (b *Backend) explain(in installed, at netip.Addr, err error) error {
	if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	a, suite := in.algs, in.sa.Suite
	if a.aead != nil {
		return fmt.Errorf("the kernel lacks the ESP algorithm %s (%s); load its module: %w", a.aead.Name, suite, err)
	}
	probe := &netlink.XfrmState{
		Src: net.IP(zeroOf(at).AsSlice()), Dst: net.IP(at.AsSlice()),
		Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL,
		Spi: probeSPI, Reqid: int(b.cfg.ReqID), Crypt: a.crypt, Ifid: int(b.cfg.IfID),
	}
	perr := b.xs.addState(probe)
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
func (b *Backend) Counters(ctx context.Context) ([]xfrm.Counters, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errors.New("kernel data plane: closed")
	}
	states, err := b.h.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("counters: list states: %w", err)
	}
	byspi := map[uint32]*xfrm.Counters{}
	spis := make([]uint32, 0, len(b.sas))
	for spi := range b.sas {
		byspi[spi] = &xfrm.Counters{SPI: spi}
		spis = append(spis, spi)
	}
	slices.Sort(spis)
	for _, s := range states {
		c, ok := byspi[uint32(s.Spi)]
		if !ok || !b.ownState(s) {
			continue
		}
		if s.Src == nil || s.Src.IsUnspecified() {
			c.InPackets += s.Statistics.Packets
			c.InBytes += s.Statistics.Bytes
			c.InErrors += uint64(s.Statistics.Failed) + uint64(s.Statistics.Replay)
		} else {
			c.OutPackets += s.Statistics.Packets
			c.OutBytes += s.Statistics.Bytes
		}
	}
	out := make([]xfrm.Counters, 0, len(spis))
	for _, spi := range spis {
		out = append(out, *byspi[spi])
	}
	return out, nil
}

// Close implements xfrm.DataPlane: it removes every policy, state and
// interface the backend installed and zeroes its copies of the keys.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	var errs []error
	// The plan for no prefixes and no peers is empty: apply deletes every
	// policy (step 3) and then every outbound state (step 4), going on
	// after a failure.
	if err := b.apply(context.Background(), nil, nil, 0); err != nil {
		errs = append(errs, err)
	}
	for spi, in := range b.sas {
		errs = append(errs, b.removeInbound(spi)...)
		in.sa.Zero()
	}
	if b.link != nil {
		if err := b.h.LinkDel(b.link); err != nil {
			errs = append(errs, fmt.Errorf("delete XFRM interface %s: %w", b.cfg.Interface, err))
		}
	}
	b.sas, b.cur, b.link = nil, plan{}, nil
	b.h.Close()
	b.xs.close()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kernel data plane: close: %w", err)
	}
	return nil
}
