// Package userspace is the userspace ESP data plane: a TUN device carries
// the inner packets, xfrm/esp protects them, and raw IP sockets for
// protocol 50 carry ESP to and from the peers, so that a member without ESP
// in its kernel interoperates with members that use the kernel's XFRM.
// Optionally (Config.ESPInUDPPort) UDP sockets carry ESP in UDP instead
// (RFC 3948), for groups whose members all run this data plane: the kernel
// then segments a run of ESP packets to one peer as one send (UDP GSO) and
// coalesces received ones (UDP GRO), which raw IP sockets cannot do.
//
// Outbound, a pipeline like wireguard-go's (outbound.go): one goroutine
// reads batches from the TUN (with TSO super-packets split by
// golang.zx2c4.com/wireguard/tun), finds each destination's peer by longest
// prefix match and numbers the packets; several goroutines seal batches in
// place with the outbound SA, in parallel; one goroutine sends the batches
// with sendmmsg in the order they were read. Inbound, one goroutine per
// local underlay address receives batches with recvmmsg, finds the SA by
// SPI (two during a rollover), drops ESP from addresses that are no
// peer's underlay, opens the packet in place, checks that the inner source
// is a prefix of the peer that sent it (origin binding) and the
// destination a local prefix, checks the sequence number against that
// sender's anti-replay window on the SA (replay.go), and writes the batch
// to the TUN (coalesced by GRO). Buffers are allocated once; the
// per-packet path does not allocate.
//
// Outbound sequence numbers never wrap: an SA that has sent 2^32-1
// packets sends no more. With Config.SeqLeaseDir they never go backwards
// either, across restarts, since receivers keep a window per sender
// (xfrm/seqlease).
package userspace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/esp"
	"github.com/mpsa/mpsa/xfrm/groupid"
	"github.com/mpsa/mpsa/xfrm/killswitch"
	"github.com/mpsa/mpsa/xfrm/seqlease"
)

// Defaults of Config.
const (
	DefaultTUNName = "mpsa0"
	// DefaultMTU is the largest inner MTU whose ESP packets fit a
	// 1500-byte underlay MTU in the worst case: outer IPv6 (40), ESP
	// header and IV (24), padding to 16 bytes with the trailer, and the
	// HMAC-SHA2-512 ICV (32).
	DefaultMTU = 1390
)

// tunAlias is set as the TUN's interface alias; a leftover link carrying
// it is recognized as this backend's own after a crash.
const tunAlias = "mpsa userspace ESP data plane"

// Config configures a Backend.
type Config struct {
	// TUNName is the name of the TUN device (DefaultTUNName if empty).
	TUNName string
	// Group is the group's name; its identity (xfrm/groupid) marks the
	// group's kill-switch routes. The TUN name if empty.
	Group string
	// MTU is the TUN's MTU (DefaultMTU if 0): the largest inner packet.
	MTU int
	// Local lists the local underlay addresses. ESP is received on each
	// and sent from the first of the peer's family. At least one.
	Local []netip.Addr
	// Logger receives operational messages; slog.Default() if nil. Keys
	// are never logged.
	Logger *slog.Logger
	// BatchSize is the number of packets per batched read or write
	// (128 if 0).
	BatchSize int
	// ESPInUDPPort, when not 0, carries ESP in UDP (RFC 3948) from and to
	// this port on every underlay address instead of as IP protocol 50,
	// so that the kernel can segment and coalesce it (UDP GSO and GRO).
	// Every member of a group must use the same encapsulation and port;
	// kernel (XFRM) members send plain ESP.
	ESPInUDPPort uint16
	// Sealers is the number of goroutines that encrypt outbound batches
	// in parallel (if 0: runtime.GOMAXPROCS(0), at most DefaultMaxSealers):
	// AES-CBC encryption is serial within a packet, so a member seals on
	// several cores only by sealing several batches at once. Packets leave
	// in the order they were read whatever the number. Each installed SA
	// keeps one Crypter per sealer, and each sealer three batches of
	// buffers (3 x 128 x 64 KiB of address space, mostly never touched).
	Sealers int
	// SeqLeaseDir, when set, is the directory of the SAs' sequence-number
	// leases (xfrm/seqlease), one file per SPI: an SA installed again
	// (after a restart, with the same keys) numbers its packets above
	// every number an earlier run may have sent, so that the peers'
	// replay windows do not drop them. It is created if needed; leases
	// older than mpsa.MaxLifetime and a day are removed at start. mpsad
	// sets it for every group; when empty, an SA installed again starts
	// from 1 and its packets are dropped as replays by every peer until
	// the SA is rekeyed.
	SeqLeaseDir string
}

// DefaultMaxSealers caps the default number of sealers: one sender
// goroutine sends what they seal, and eight sealers already outpace it
// (a sealer seals about 9 Gbit/s of AES-256-CBC with HMAC-SHA-256 on the
// machine of docs/performance.md), while each costs buffer space.
const DefaultMaxSealers = 8

// Drops counts packets dropped before an SA could be charged for them,
// and failed writes to the TUN.
type Drops struct {
	// NoOutbound counts packets from the TUN while no outbound SA is set.
	NoOutbound uint64
	// NoRoute counts packets from the TUN whose destination is in no peer
	// prefix, or whose peer's family has no local underlay address.
	NoRoute uint64
	// UnknownSPI counts ESP packets for no installed SA.
	UnknownSPI uint64
	// Malformed counts ESP packets too short for an SPI or with a bad
	// outer header.
	Malformed uint64
	// TUNWriteErrors counts failed batched writes to the TUN: each is one
	// write of up to a batch of inner packets, some of which may have been
	// written. It counts writes, not packets.
	TUNWriteErrors uint64
	// UnknownPeer counts ESP packets from an address that is no peer's
	// underlay address, dropped before their ICV is checked.
	UnknownPeer uint64
	// Origin counts authenticated packets whose inner source is not in
	// the prefixes of the peer whose underlay address sent them.
	Origin uint64
	// Replay counts authenticated packets whose sequence number the
	// sender's replay window on the SA had seen, or was too far behind.
	Replay uint64
	// SeqExhausted counts packets from the TUN not sent because the
	// outbound SA had used its last sequence number (2^32-1).
	SeqExhausted uint64
	// SeqLease counts packets from the TUN not sent because their
	// sequence number was not yet reserved on disk (Config.SeqLeaseDir):
	// the lease file could not be written, or not as fast as the traffic.
	SeqLease uint64
}

// Names of the drop reasons in DropCounts.
const (
	DropNoOutbound     = "no_outbound_sa"
	DropNoRoute        = "no_route"
	DropUnknownSPI     = "unknown_spi"
	DropMalformed      = "malformed"
	DropTUNWriteErrors = "tun_write_errors"
	DropUnknownPeer    = "unknown_peer"
	DropOrigin         = "origin"
	DropReplay         = "replay"
	DropSeqExhausted   = "seq_exhausted"
	DropSeqLease       = "seq_lease"
	// DropSAInErrors and DropSAOutErrors are the inbound and outbound
	// errors of every SA since the backend started, those of removed SAs
	// included: the sum of Counters' InErrors and OutErrors, except that
	// a removed SA's count stays in them.
	DropSAInErrors  = "sa_in_errors"
	DropSAOutErrors = "sa_out_errors"
)

// saEntry is one installed SA with its counters and per-goroutine
// Crypters (a Crypter is not safe for concurrent use): seal[w] is outbound
// sealer w's (Config.Sealers of them), open[i] the inbound goroutine's of
// socket i.
//
// The fields fall in four groups: sa, the Crypters, removed and totals,
// read by every goroutine and not written (removed only once, by Remove;
// what totals points to is written only when errors are counted); users,
// written by the sealers and the inbound goroutines once per batch; the
// inbound counters, written by the inbound goroutines; and the outbound
// counters, written by the outbound sender goroutine. A full cache line
// (64 bytes) of padding between the groups keeps any two of them off a
// common line wherever the allocator places the entry, so that counting in
// one direction does not invalidate the line the other direction reads or
// writes.
type saEntry struct {
	sa         *esp.SA
	seal, open []*esp.Crypter
	// removed is set by Remove, before it waits for users to drop to 0
	// and zeroes the keys: acquire fails from then on, and the sender
	// drops batches sealed before but not yet sent (see sendElem).
	removed atomic.Bool
	// totals, if set, are the backend's error counts over all SAs
	// (Backend.DropCounts), which addInErrors and addOutErrors add to.
	totals *saErrorTotals

	_ [64]byte
	// users counts the goroutines that use the SA's keys right now,
	// between acquire and release: a sealer on one batch, an inbound
	// goroutine on a run of packets of one batch.
	users atomic.Int64
	// windows holds the SA's anti-replay window of each sender, indexed
	// by the sender's slot (peerTable.senders). It is replaced, longer,
	// under Backend.mu before a peer table with new slots is published,
	// so the inbound path finds a window for every sender of the table
	// it reads.
	windows atomic.Pointer[[]*replayWindow]
	// gen orders the SAs by installation (Backend.gen): a sender's slot
	// stays while an SA older than its departure is installed.
	gen uint64
	// lease reserves the outbound sequence numbers on disk; nil without
	// Config.SeqLeaseDir. Only the reader goroutine asks it per packet.
	lease *seqlease.Lease
	// exhausted and unleased are set once the reader has logged that the
	// SA's sequence numbers ran out, or ran past the lease, so that each
	// is logged once (unleased again after numbers pass once more).
	exhausted, unleased atomic.Bool

	_                            [64]byte
	inPackets, inBytes, inErrors atomic.Uint64

	_                               [64]byte
	outPackets, outBytes, outErrors atomic.Uint64
}

// saErrorTotals count the errors of every SA of a backend, so that those
// of a removed SA are not lost with it.
type saErrorTotals struct {
	in, out atomic.Uint64
}

// addInErrors counts n inbound errors of the SA.
func (e *saEntry) addInErrors(n uint64) {
	e.inErrors.Add(n)
	if e.totals != nil {
		e.totals.in.Add(n)
	}
}

// addOutErrors counts n outbound errors of the SA.
func (e *saEntry) addOutErrors(n uint64) {
	e.outErrors.Add(n)
	if e.totals != nil {
		e.totals.out.Add(n)
	}
}

// acquire marks the SA's keys as in use by the caller until release. It
// fails once Remove has begun retiring the SA; the caller must then not
// use the keys (count the packets as errors instead). Between acquire and
// release the caller must not block (no I/O), since Remove waits for it.
func (e *saEntry) acquire() bool {
	e.users.Add(1)
	if e.removed.Load() {
		e.users.Add(-1)
		return false
	}
	return true
}

// release ends a successful acquire.
func (e *saEntry) release() { e.users.Add(-1) }

// retire zeroes the SA's keys once no goroutine uses them; Remove calls
// it after unpublishing the entry. Zeroing keys under a running Seal or
// Open could send a packet encrypted with a half-wiped AES key schedule
// (esp.SA.Zero leaves that to the caller). Sequentially consistent atomics
// make the handshake with acquire safe: either acquire sees removed and
// backs off, or retire sees its user and waits for the release, which
// comes within one batch's crypto.
func (e *saEntry) retire() {
	e.removed.Store(true)
	for e.users.Load() != 0 {
		time.Sleep(20 * time.Microsecond)
	}
	e.sa.Zero()
}

// growWindows gives the SA a replay window for every slot below n that
// has none; windows already there stay (with what they have seen). Called
// under Backend.mu.
func (e *saEntry) growWindows(n int) {
	var cur []*replayWindow
	if p := e.windows.Load(); p != nil {
		cur = *p
	}
	if len(cur) >= n {
		return
	}
	next := make([]*replayWindow, n)
	copy(next, cur)
	for i := len(cur); i < n; i++ {
		next[i] = new(replayWindow)
	}
	e.windows.Store(&next)
}

// resetWindow gives the SA a fresh window in slot, if it has one there.
// Called under Backend.mu.
func (e *saEntry) resetWindow(slot int) {
	p := e.windows.Load()
	if p == nil || slot >= len(*p) {
		return
	}
	next := slices.Clone(*p)
	next[slot] = new(replayWindow)
	e.windows.Store(&next)
}

// window returns the SA's replay window of the sender in slot, nil if
// there is none.
func (e *saEntry) window(slot int) *replayWindow {
	p := e.windows.Load()
	if p == nil || slot >= len(*p) {
		return nil
	}
	return (*p)[slot]
}

// saSet is the immutable set of installed SAs that the data path reads.
type saSet struct {
	entries []*saEntry
}

// all returns the installed SAs (none for a nil set).
func (s *saSet) all() []*saEntry {
	if s == nil {
		return nil
	}
	return s.entries
}

func (s *saSet) find(spi uint32) *saEntry {
	if s == nil {
		return nil
	}
	for _, e := range s.entries {
		if e.sa.SPI() == spi {
			return e
		}
	}
	return nil
}

// Backend is the userspace data plane. It implements xfrm.DataPlane.
type Backend struct {
	cfg   Config
	log   *slog.Logger
	nl    *netlink.Handle
	dev   tun.Device
	name  string
	index int
	// socks has one socket per underlay address: raw ESP, or ESP in UDP
	// with Config.ESPInUDPPort.
	socks []*espSocket
	// tx4 and tx6 are the send sides of the first socket of each
	// family.
	tx4, tx6 *sendQueue

	mu       sync.Mutex // serializes control operations
	sas      atomic.Pointer[saSet]
	outbound atomic.Pointer[saEntry]
	peers    atomic.Pointer[peerTable]
	routes   []netlink.Route // installed by SetPeers
	// holes is the group's kill switch: a blackhole route per peer
	// prefix, kept when the backend closes or dies.
	holes *killswitch.Routes
	// slots gives every peer underlay address its replay window slot,
	// kept after it leaves the peer table while an SA it may have sent
	// with is installed (slotAlloc); gen is the generation of the next
	// SA installed (saEntry.gen).
	slots *slotAlloc
	gen   uint64
	// leases is the directory of Config.SeqLeaseDir, nil without.
	leases *seqlease.Dir
	// wanted is the peer table last given to SetPeers, which Protect
	// applies again, and the addresses given to Protect.
	wanted xfrm.ProtectedTable

	drops struct {
		noOutbound, noRoute, unknownSPI, malformed, tunWrite atomic.Uint64
		unknownPeer, origin, replay, seqExhausted, seqLease  atomic.Uint64
	}
	saErrors saErrorTotals

	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	closed    chan struct{}
	stopCtx   func() bool
}

var (
	_ xfrm.DataPlane = (*Backend)(nil)
	_ xfrm.Protector = (*Backend)(nil)
)

// New creates the TUN device and the ESP sockets in the calling
// thread's network namespace and starts the data path. It first removes a
// leftover TUN of the configured name that carries this backend's alias
// (from a crash) and refuses to touch a link of that name that does not.
// The data path runs until Close, or until ctx is done, which closes the
// backend.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.TUNName == "" {
		cfg.TUNName = DefaultTUNName
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 128
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Sealers < 0 {
		return nil, fmt.Errorf("userspace data plane: %d sealers", cfg.Sealers)
	}
	if cfg.Sealers == 0 {
		cfg.Sealers = min(max(1, runtime.GOMAXPROCS(0)), DefaultMaxSealers)
	}
	if cfg.MTU < 576 || cfg.MTU > 65535-esp.HeaderLen-esp.IVLen-esp.MaxTrailerLen-60 {
		return nil, fmt.Errorf("userspace data plane: MTU %d out of range", cfg.MTU)
	}
	if len(cfg.Local) == 0 {
		return nil, errors.New("userspace data plane: no local underlay address")
	}
	b := &Backend{cfg: cfg, log: cfg.Logger.With("dataplane", "userspace", "tun", cfg.TUNName), closed: make(chan struct{})}
	if err := b.init(); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			b.teardown()
		}
	}()
	var err error
	if b.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return nil, fmt.Errorf("userspace data plane: netlink: %w", err)
	}
	if cfg.Group == "" {
		cfg.Group = cfg.TUNName
		b.cfg.Group = cfg.Group
	}
	if b.holes, err = killswitch.Adopt(b.nl, groupid.Of(cfg.Group)); err != nil {
		return nil, fmt.Errorf("userspace data plane: %w", err)
	}
	if n := b.holes.Len(); n > 0 {
		b.log.Info("adopted the group's kill switch of an earlier run", "blackhole_routes", n)
	}
	if err := b.removeLeftover(); err != nil {
		return nil, err
	}
	if err := b.createTUN(); err != nil {
		return nil, err
	}
	if err := b.openSockets(); err != nil {
		return nil, err
	}
	b.peers.Store(&peerTable{})
	// The TUN reports link events on a small channel; drain it so that
	// its listeners never block. It is closed when the TUN is.
	go func(ev <-chan tun.Event) {
		for range ev {
		}
	}(b.dev.Events())
	b.startOutbound()
	b.wg.Add(len(b.socks))
	for i, s := range b.socks {
		if s.udp {
			go b.inboundLoopUDP(i, s)
		} else {
			go b.inboundLoop(i, s)
		}
	}
	b.stopCtx = context.AfterFunc(ctx, func() { _ = b.Close() })
	ok = true
	encap := "ESP (IP protocol 50)"
	if cfg.ESPInUDPPort != 0 {
		encap = fmt.Sprintf("ESP in UDP, port %d", cfg.ESPInUDPPort)
		for _, s := range b.socks {
			b.log.Info("ESP-in-UDP socket", "local", s.local, "gso", s.tx.gso.Load(), "gro", s.gro)
		}
	}
	b.log.Info("userspace data plane started", "mtu", cfg.MTU, "local", cfg.Local, "batch", b.dev.BatchSize(), "sealers", cfg.Sealers, "encapsulation", encap)
	return b, nil
}

// init sets up what the data path needs besides devices and sockets: the
// slots of the replay windows and the lease directory.
func (b *Backend) init() error {
	b.slots = newSlotAlloc()
	if b.cfg.SeqLeaseDir != "" {
		d, err := seqlease.OpenPruned(b.cfg.SeqLeaseDir, seqlease.PruneAge, b.log)
		if err != nil {
			return fmt.Errorf("userspace data plane: %w", err)
		}
		b.leases = d
	}
	return nil
}

// openSockets opens one raw ESP socket, or one ESP-in-UDP socket, per
// local underlay address.
func (b *Backend) openSockets() error {
	for _, a := range b.cfg.Local {
		a = a.Unmap()
		s, err := openESPSocket(a, b.cfg.ESPInUDPPort != 0, b.cfg.ESPInUDPPort, b.cfg.BatchSize, b.log)
		if err != nil {
			return fmt.Errorf("userspace data plane: %w", err)
		}
		b.socks = append(b.socks, s)
		if a.Is4() && b.tx4 == nil {
			b.tx4 = &s.tx
		}
		if a.Is6() && b.tx6 == nil {
			b.tx6 = &s.tx
		}
	}
	return nil
}

// Name returns the TUN device's name.
func (b *Backend) Name() string { return b.name }

// InstallInbound implements xfrm.DataPlane. The keys are copied; the
// caller may zero sa afterwards.
func (b *Backend) InstallInbound(ctx context.Context, sa xfrm.SA) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isClosed() {
		return fmt.Errorf("install inbound SA %08x: data plane closed", sa.SPI)
	}
	cur := b.sas.Load()
	if cur.find(sa.SPI) != nil {
		return fmt.Errorf("install inbound SA %08x: already installed", sa.SPI)
	}
	s, err := esp.NewSA(sa.SPI, sa.Suite, sa.EncrKey, sa.IntegKey)
	if err != nil {
		return fmt.Errorf("install inbound SA %08x: %w", sa.SPI, err)
	}
	e := &saEntry{sa: s, totals: &b.saErrors, gen: b.gen}
	if b.leases != nil {
		// Reserved before the SA can send: a number it sends is on
		// disk first. Only a lease that cannot be read is an error.
		l, err := b.leases.Acquire(fmt.Sprintf("%08x", sa.SPI), seqlease.DefaultStep)
		if err != nil {
			s.Zero()
			return fmt.Errorf("install inbound SA %08x: %w", sa.SPI, err)
		}
		if err := l.Err(); err != nil {
			// Receiving works; sending waits for a reservation on
			// disk, which Allows retries.
			b.log.Error("cannot write the sequence-number lease: the SA receives, but sends nothing until the lease can be written", "spi", fmt.Sprintf("%08x", sa.SPI), "err", err)
		}
		e.lease = l
		s.SetLastSeq(l.Start())
		if l.Start() > 0 {
			b.log.Info("SA installed again: its sequence numbers continue above those an earlier run may have sent", "spi", fmt.Sprintf("%08x", sa.SPI), "from", uint64(l.Start())+1)
		}
	}
	e.growWindows(b.peers.Load().slotCount())
	for range b.cfg.Sealers {
		e.seal = append(e.seal, s.NewCrypter(nil))
	}
	for range b.socks {
		e.open = append(e.open, s.NewCrypter(nil))
	}
	next := &saSet{}
	if cur != nil {
		next.entries = slices.Clone(cur.entries)
	}
	next.entries = append(next.entries, e)
	b.sas.Store(next)
	b.gen++
	b.log.Info("installed SA", "spi", fmt.Sprintf("%08x", sa.SPI), "suite", sa.Suite.String())
	return nil
}

// SetOutbound implements xfrm.DataPlane.
func (b *Backend) SetOutbound(ctx context.Context, spi uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.sas.Load().find(spi)
	if e == nil {
		return fmt.Errorf("set outbound SA %08x: not installed", spi)
	}
	b.outbound.Store(e)
	b.log.Info("outbound SA set", "spi", fmt.Sprintf("%08x", spi))
	return nil
}

// Remove implements xfrm.DataPlane. It zeroes the SA's keys.
func (b *Backend) Remove(ctx context.Context, spi uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.sas.Load()
	e := cur.find(spi)
	if e == nil {
		return fmt.Errorf("remove SA %08x: not installed", spi)
	}
	if b.outbound.Load() == e {
		b.outbound.Store(nil)
	}
	next := &saSet{}
	for _, o := range cur.entries {
		if o != e {
			next.entries = append(next.entries, o)
		}
	}
	b.sas.Store(next)
	// Batches in flight and inbound goroutines may still hold e. From
	// here on the sealers and the inbound goroutines count its packets
	// as errors instead of using the keys, and the sender drops batches
	// sealed before, so that nothing more leaves with the SA (up to a
	// batch being sent at this very moment). The keys are zeroed once
	// the last user is done.
	e.retire()
	// Senders that left while it was installed may give up their slots.
	b.settleSlots(b.peers.Load())
	b.log.Info("removed SA", "spi", fmt.Sprintf("%08x", spi))
	if e.lease != nil {
		// The SA is gone for good: its numbers need no memory.
		if err := e.lease.Remove(); err != nil {
			return fmt.Errorf("remove SA %08x: %w", spi, err)
		}
	}
	return nil
}

// SetPeers implements xfrm.DataPlane: it replaces the peer table and the
// routes through the TUN, one per peer prefix, with a preferred source
// address taken from a local prefix where the host has one.
//
// A peer whose prefix contains an address given to Protect is left out,
// its blackhole route too, and named in the error, after the rest is
// applied.
func (b *Backend) SetPeers(ctx context.Context, local []netip.Prefix, peers []xfrm.Peer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isClosed() {
		return errors.New("set peers: data plane closed")
	}
	b.wanted.Set(local, peers)
	return b.setPeers(ctx)
}

// Protect implements xfrm.Protector: a peer whose prefix contains one of
// addrs is left out of the peer table from now on, its blackhole route
// too (it would drop the control exchange). The last peer table given to
// SetPeers is applied again.
func (b *Backend) Protect(ctx context.Context, addrs []netip.Addr) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isClosed() {
		return errors.New("protect: data plane closed")
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
	if refused != nil {
		refused = fmt.Errorf("set peers: %w", refused)
		b.log.ErrorContext(ctx, "peers left out of the peer table", "err", refused)
	}
	// New senders get new slots; b.slots keeps them (so a failed
	// SetPeers may leave a slot unused, which costs nothing).
	t, err := newPeerTable(local, peers, b.cfg.ESPInUDPPort, b.slots)
	if err != nil {
		return errors.Join(fmt.Errorf("set peers: %w", err), refused)
	}
	routes, err := b.routesFor(t)
	if err != nil {
		return errors.Join(fmt.Errorf("set peers: %w", err), refused)
	}
	// The kill switch first: a prefix is covered before its TUN route
	// exists, and still covered after the TUN route is gone.
	prefixes := make([]netip.Prefix, len(t.peers))
	for i, p := range t.peers {
		prefixes[i] = p.Prefix
	}
	if err := b.holes.Sync(prefixes); err != nil {
		return errors.Join(fmt.Errorf("set peers: kill switch: %w", err), refused)
	}
	b.publishPeers(t)
	if err := b.syncRoutes(routes); err != nil {
		return errors.Join(fmt.Errorf("set peers: %w", err), refused)
	}
	b.log.Info("peer table set", "local", len(t.local), "peers", len(t.peers))
	return refused
}

// publishPeers makes t the peer table of the data path, once every SA has
// a replay window for every sender of t, so that the inbound path finds
// one for every sender it knows. Called under b.mu.
func (b *Backend) publishPeers(t *peerTable) {
	b.settleSlots(t)
	for _, e := range b.sas.Load().all() {
		e.growWindows(t.slotCount())
	}
	b.peers.Store(t)
}

// settleSlots frees the slots of the senders out of t that no installed
// SA predates, with fresh windows on every SA for whoever gets them next.
// Called under b.mu.
func (b *Backend) settleSlots(t *peerTable) {
	if b.slots == nil {
		return // a Backend of a unit test, without init
	}
	oldest := b.gen
	for _, e := range b.sas.Load().all() {
		oldest = min(oldest, e.gen)
	}
	for _, slot := range b.slots.settle(t, b.gen, oldest) {
		for _, e := range b.sas.Load().all() {
			e.resetWindow(slot)
		}
	}
}

// Counters implements xfrm.DataPlane.
func (b *Backend) Counters(ctx context.Context) ([]xfrm.Counters, error) {
	var out []xfrm.Counters
	set := b.sas.Load()
	if set == nil {
		return nil, nil
	}
	for _, e := range set.entries {
		out = append(out, xfrm.Counters{
			SPI:        e.sa.SPI(),
			InPackets:  e.inPackets.Load(),
			InBytes:    e.inBytes.Load(),
			OutPackets: e.outPackets.Load(),
			OutBytes:   e.outBytes.Load(),
			InErrors:   e.inErrors.Load(),
			OutErrors:  e.outErrors.Load(),
		})
	}
	return out, nil
}

// Drops reports the packets dropped before an SA was found.
func (b *Backend) Drops() Drops {
	return Drops{
		NoOutbound:     b.drops.noOutbound.Load(),
		NoRoute:        b.drops.noRoute.Load(),
		UnknownSPI:     b.drops.unknownSPI.Load(),
		Malformed:      b.drops.malformed.Load(),
		TUNWriteErrors: b.drops.tunWrite.Load(),
		UnknownPeer:    b.drops.unknownPeer.Load(),
		Origin:         b.drops.origin.Load(),
		Replay:         b.drops.replay.Load(),
		SeqExhausted:   b.drops.seqExhausted.Load(),
		SeqLease:       b.drops.seqLease.Load(),
	}
}

// DropCounts reports every packet the data plane dropped since it
// started, by reason (the Drop constants, all present, 0 included): the
// Drops, whose TUN write errors count failed writes rather than packets,
// and the errors charged to SAs, removed ones included. A member's status
// shows them.
func (b *Backend) DropCounts() map[string]uint64 {
	d := b.Drops()
	return map[string]uint64{
		DropNoOutbound:     d.NoOutbound,
		DropNoRoute:        d.NoRoute,
		DropUnknownSPI:     d.UnknownSPI,
		DropMalformed:      d.Malformed,
		DropTUNWriteErrors: d.TUNWriteErrors,
		DropUnknownPeer:    d.UnknownPeer,
		DropOrigin:         d.Origin,
		DropReplay:         d.Replay,
		DropSeqExhausted:   d.SeqExhausted,
		DropSeqLease:       d.SeqLease,
		DropSAInErrors:     b.saErrors.in.Load(),
		DropSAOutErrors:    b.saErrors.out.Load(),
	}
}

func (b *Backend) isClosed() bool {
	select {
	case <-b.closed:
		return true
	default:
		return false
	}
}

// Close implements xfrm.DataPlane: it stops the data path, removes the TUN
// device (and with it every route through it) and zeroes all keys. The
// kill switch, a blackhole route per peer prefix, stays.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.markClosed()
		b.mu.Unlock()
		if b.stopCtx != nil {
			b.stopCtx()
		}
		b.closeErr = b.teardown()
		b.log.Info("userspace data plane closed")
	})
	return b.closeErr
}

// markClosed marks the backend closed, so that the control operations
// refuse from then on, and reports whether this call did; b.mu is held.
func (b *Backend) markClosed() bool {
	if b.isClosed() {
		return false
	}
	close(b.closed)
	return true
}

// Flush implements xfrm.DataPlane: it removes the group's blackhole
// routes, whoever's run installed them, and closes the backend. The
// backend is marked closed in the same critical section, before the
// routes go, so that no SetPeers can add one after them. On a backend
// already closed (by Close, or by the end of New's context) it removes
// them all the same, in the calling thread's network namespace, as New
// works in.
func (b *Backend) Flush(ctx context.Context) error {
	b.mu.Lock()
	if !b.markClosed() {
		b.mu.Unlock()
		closeErr := b.Close() // waits for a Close under way
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return errors.Join(fmt.Errorf("userspace data plane: flush after close: netlink: %w", err), closeErr)
		}
		defer h.Close()
		n, err := killswitch.Flush(h, groupid.Of(b.cfg.Group))
		if err != nil {
			return errors.Join(fmt.Errorf("userspace data plane: flush after close: %w", err), closeErr)
		}
		b.log.InfoContext(ctx, "flushed after close: kill switch removed", "blackhole_routes", n)
		return closeErr
	}
	n, err := killswitch.Flush(b.nl, groupid.Of(b.cfg.Group))
	b.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("userspace data plane: flush kill switch: %w", err)
		b.log.ErrorContext(ctx, "flushing: the kill switch was not removed entirely", "blackhole_routes_removed", n, "err", err)
	} else {
		b.log.InfoContext(ctx, "flushing: kill switch removed", "blackhole_routes", n)
	}
	return errors.Join(err, b.Close())
}

// teardown releases whatever New or later calls set up; it is also the
// cleanup of a failed New.
func (b *Backend) teardown() error {
	var errs []error
	for _, s := range b.socks {
		if err := s.close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", s.file.Name(), err))
		}
	}
	if b.dev != nil {
		if err := b.dev.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close TUN %s: %w", b.name, err))
		}
	}
	b.wg.Wait()
	if b.nl != nil && b.dev != nil {
		// A TUN goes away with its last file descriptor; make sure,
		// and say so if it did not.
		if l, err := b.nl.LinkByName(b.name); err == nil && l.Attrs().Alias == tunAlias {
			if err := b.nl.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("delete TUN %s: %w", b.name, err))
			}
		}
	}
	b.routes = nil
	b.outbound.Store(nil)
	if set := b.sas.Load(); set != nil {
		for _, e := range set.entries {
			e.sa.Zero()
		}
	}
	b.sas.Store(nil)
	if b.nl != nil {
		b.nl.Close()
	}
	return errors.Join(errs...)
}
