// Package protect verifies that charon's control CHILD_SA protects the
// control exchange: that a UDP datagram claiming the remote control address
// cannot reach mpsad unless it came through the child, and that mpsad's own
// datagrams (SK_d, nonces) cannot leave in clear.
//
// The proof depends on how charon does ESP:
//
//   - kernel IPsec (kernel-netlink): the XFRM policies charon installed for
//     the child's traffic selectors, read back from the kernel one by one
//     with their exact selectors (XFRM_MSG_GETPOLICY), must allow only ESP
//     with the child's reqid at level required, inbound and outbound: the
//     kernel then drops plaintext itself.
//   - route-based kernel IPsec (the child has if_id_in/if_id_out): the
//     policies carry the if_id and match only packets of the XFRM
//     interface, so plaintext on another link matches none and is
//     delivered. Control datagrams may only be accepted on the XFRM
//     interface with the child's inbound if_id, and the route to the remote
//     control address must go into the one with its outbound if_id; the
//     policies with the if_id must exist too.
//   - kernel-libipsec (charon does ESP in userspace over a TUN device): no
//     kernel policy protects anything. Control datagrams may only be
//     accepted on charon's TUN, found as the device the route from the local
//     to the remote control address goes into.
//
// In every case the child must use ESP with an encryption algorithm other
// than NULL. A Verify that cannot prove protection returns an error saying
// what is missing and what to change; it never falls back to accepting.
package protect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Child is charon's control CHILD_SA as VICI's list-sas reports it.
type Child struct {
	// Name is the child's name (VICI "name").
	Name string
	// ReqID is the reqid of its policies and SAs (VICI "reqid").
	ReqID uint32
	// Protocol is "ESP" or "AH" (VICI "protocol").
	Protocol string
	// Mode is "TUNNEL", "TRANSPORT", "TRANSPORT_PROXY", "BEET" or "IPTFS"
	// (VICI "mode").
	Mode string
	// EncrAlg is VICI's "encr-alg": "AES_CBC", "AES_GCM_16", "NULL"...; ""
	// for AH or when VICI reports none.
	EncrAlg string
	// IfIDIn and IfIDOut are VICI's "if-id-in" and "if-id-out" (printed in
	// hexadecimal); 0 when the child is not route-based.
	IfIDIn, IfIDOut uint32
	// MarkIn and MarkOut are VICI's "mark-in" and "mark-out" (hexadecimal);
	// 0 when the child has no marks.
	MarkIn, MarkOut uint32
	// Local and Remote are the control addresses.
	Local, Remote netip.Addr
	// Port is the control UDP port: mpsad sends control datagrams from it
	// to it. 0 stands for every port: then only traffic selectors without
	// a port restriction prove anything. It is the flow proved when Flow
	// is the zero Flow.
	Port uint16
	// Flow, when not the zero Flow, is another flow between the control
	// addresses to prove instead of the control exchange: BGP's TCP
	// session to the controller's port (docs/bgp.md).
	Flow Flow
	// LocalTS and RemoteTS are the traffic selectors exactly as VICI
	// prints them ("local-ts", "remote-ts"): "10.98.0.1/32",
	// "10.98.0.1/32[udp/4501]", "fd98::1/128[tcp/bgp]", "10.0.0.1..10.0.0.6".
	LocalTS, RemoteTS []string
}

// Flow is traffic between the control addresses that the control child
// must carry: a protocol and the port on each side.
type Flow struct {
	// Proto is the IP protocol: unix.IPPROTO_UDP or unix.IPPROTO_TCP.
	Proto uint8
	// LocalPort is the port on the local control address, RemotePort
	// the one on the remote control address; 0 stands for every port
	// (an ephemeral port), which only selectors without a port
	// restriction on that side cover.
	LocalPort, RemotePort uint16
}

// String describes the flow in words: "TCP from any port of the local
// control address to port 179 of the remote one".
func (f Flow) String() string {
	port := func(p uint16) string {
		if p == 0 {
			return "any port"
		}
		return fmt.Sprintf("port %d", p)
	}
	return fmt.Sprintf("%s from %s of the local control address to %s of the remote one", protoWord(f.Proto), port(f.LocalPort), port(f.RemotePort))
}

// protoWord names protocol p in a sentence: "UDP", "TCP", "protocol 47".
func protoWord(p uint8) string {
	if n := protoName(p); n != strconv.Itoa(int(p)) {
		return strings.ToUpper(n)
	}
	return fmt.Sprintf("protocol %d", p)
}

// flow is the flow Verify proves for c: c.Flow, or the control exchange.
func (c Child) flow() Flow {
	if c.Flow != (Flow{}) {
		return c.Flow
	}
	return Flow{Proto: unix.IPPROTO_UDP, LocalPort: c.Port, RemotePort: c.Port}
}

// Proof says how the control child protects the control addresses.
type Proof struct {
	// IfIndex, when not 0, is the only interface on which control
	// datagrams from Remote may be accepted: charon's TUN
	// (kernel-libipsec) or the child's XFRM interface (route-based).
	// 0: the kernel's XFRM policies drop plaintext themselves.
	IfIndex int
	// SrcPort, when not 0, is the only source port from which the flow's
	// packets from Remote are protected (UDP control datagrams, or the
	// segments of Child.Flow): the remote traffic selector names that
	// port, so a packet from another source port matches no policy of
	// the child. Datagrams from other source ports must be dropped. 0:
	// every source port is protected.
	SrcPort uint16
	// IfName is the name of interface IfIndex, when not 0: what a TCP
	// socket of the flow binds to (SO_BINDTODEVICE).
	IfName string
	// How says it in words for logs and status.
	How string
}

// ErrUnprotected is matched (errors.Is) by every error of Verify that
// found the child's configuration or the kernel's state wanting, as opposed
// to one that could not read the kernel's state. Both mean: do not serve
// the group.
var ErrUnprotected = errors.New("control child does not protect the control addresses")

// UnprotectedError is a verification that found the control child does
// not protect the control addresses, with the reason in words.
type UnprotectedError struct {
	// Child is the child's name.
	Child string
	// Reason says what is missing and what to change.
	Reason string
}

// Error names the control child and why it is not proved to protect.
func (e *UnprotectedError) Error() string { return "control child " + e.Child + ": " + e.Reason }

// Is makes errors.Is(err, ErrUnprotected) true.
func (e *UnprotectedError) Is(target error) bool { return target == ErrUnprotected }

func unprotected(c Child, format string, args ...any) error {
	return &UnprotectedError{Child: c.Name, Reason: fmt.Sprintf(format, args...)}
}

// Verifier reads the kernel's state of the network namespace it was
// created in. It is safe for concurrent use; calls are serialized.
type Verifier struct {
	mu         sync.Mutex
	xfrm       *nlSocket
	route      *nlSocket
	protocols  map[string]uint8
	lookupPort func(ctx context.Context, network, service string) (int, error)
}

// New opens the netlink sockets of a Verifier in the network namespace of
// the calling thread.
func New() (*Verifier, error) {
	x, err := openNetlink(unix.NETLINK_XFRM)
	if err != nil {
		return nil, fmt.Errorf("open NETLINK_XFRM socket: %w", err)
	}
	r, err := openNetlink(unix.NETLINK_ROUTE)
	if err != nil {
		x.close()
		return nil, fmt.Errorf("open NETLINK_ROUTE socket: %w", err)
	}
	return &Verifier{
		xfrm: x, route: r,
		protocols:  readProtocols("/etc/protocols"),
		lookupPort: net.DefaultResolver.LookupPort,
	}, nil
}

// Close closes the sockets.
func (v *Verifier) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return errors.Join(v.xfrm.close(), v.route.close())
}

// requests is the number of netlink requests sent so far (tests).
func (v *Verifier) requests() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.xfrm.requests + v.route.requests
}

// Verify checks that c protects Local<->Remote both ways; libipsec says
// whether charon loaded kernel-libipsec (the caller knows it from VICI's
// stats). The error says what is missing and what to change; it matches
// ErrUnprotected unless the kernel's state could not be read. A
// verification costs a few netlink requests, whatever the number of
// policies in the kernel.
func (v *Verifier) Verify(ctx context.Context, c Child, libipsec bool) (Proof, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := checkChild(c); err != nil {
		return Proof{}, err
	}
	pairs, srcPort, err := v.coveringPairs(ctx, c)
	if err != nil {
		return Proof{}, err
	}
	if libipsec {
		return v.verifyLibipsec(ctx, c, srcPort)
	}
	return v.verifyKernel(ctx, c, pairs, srcPort)
}

// checkChild checks what VICI reports of the child itself.
func checkChild(c Child) error {
	switch c.Protocol {
	case "ESP":
	case "AH":
		return unprotected(c, "uses AH, which authenticates but does not encrypt: SK_d and the nonce of every MPSA_PUT "+
			"would travel in clear; use esp_proposals with an encryption algorithm (aes256gcm16 or aes256-sha256) instead of ah_proposals")
	default:
		return unprotected(c, "protocol %q is not ESP: charon does not report the child as an ESP SA", c.Protocol)
	}
	switch alg := strings.ToUpper(c.EncrAlg); {
	case alg == "":
		return unprotected(c, "charon reports no encryption algorithm for the ESP SA: cannot tell that SK_d and the nonce are encrypted")
	case strings.HasPrefix(alg, "NULL"):
		return unprotected(c, "ESP with encryption %s encrypts nothing: SK_d and the nonce of every MPSA_PUT would travel in clear; "+
			"remove null (and null_aes_gmac) from the child's esp_proposals", c.EncrAlg)
	}
	if !c.Local.IsValid() || !c.Remote.IsValid() || c.Local.Is4() != c.Remote.Is4() || c.Local.Zone() != "" || c.Remote.Zone() != "" {
		return unprotected(c, "control addresses %v and %v are not two addresses of one family", c.Local, c.Remote)
	}
	if c.Local == c.Remote {
		return unprotected(c, "local and remote control address are both %s", c.Local)
	}
	if c.Local.Is4In6() || c.Remote.Is4In6() {
		return unprotected(c, "control addresses %v and %v: IPv4-mapped IPv6 addresses are not supported", c.Local, c.Remote)
	}
	if c.MarkIn != 0 || c.MarkOut != 0 {
		return unprotected(c, "has marks (mark_in %08x, mark_out %08x): its XFRM policies match only marked packets, so plaintext "+
			"without the mark matches none and would be delivered; remove mark_in and mark_out from the control child", c.MarkIn, c.MarkOut)
	}
	if c.ReqID == 0 {
		return unprotected(c, "charon reports reqid 0: the child's policies cannot be told from others")
	}
	return nil
}

// Values of linux/xfrm.h.
const (
	modeTransport = 0 // XFRM_MODE_TRANSPORT
	modeTunnel    = 1 // XFRM_MODE_TUNNEL
	modeBEET      = 4 // XFRM_MODE_BEET
	modeIPTFS     = 5 // XFRM_MODE_IPTFS

	dirIn  = 0 // XFRM_POLICY_IN
	dirOut = 1 // XFRM_POLICY_OUT

	actionAllow = 0 // XFRM_POLICY_ALLOW
)

// kernelMode maps VICI's mode to the kernel's XFRM_MODE_*.
func kernelMode(m string) (uint8, bool) {
	switch m {
	case "TRANSPORT", "TRANSPORT_PROXY":
		return modeTransport, true
	case "TUNNEL":
		return modeTunnel, true
	case "BEET":
		return modeBEET, true
	case "IPTFS":
		return modeIPTFS, true
	}
	return 0, false
}

func modeName(m uint8) string {
	switch m {
	case modeTransport:
		return "transport"
	case modeTunnel:
		return "tunnel"
	case modeBEET:
		return "beet"
	case modeIPTFS:
		return "iptfs"
	}
	return fmt.Sprintf("mode %d", m)
}

// coveringPairs parses the traffic selectors and returns the outbound
// selectors charon installed for the pairs that match every packet of the
// flow (c.flow(): by default control datagrams, Local:Port -> Remote:Port,
// UDP), and the source port the inbound direction is restricted to (0:
// none). Pairs of other families or protocols are left out: their
// policies cannot match the flow.
func (v *Verifier) coveringPairs(ctx context.Context, c Child) ([]selector, uint16, error) {
	parse := func(side string, list []string) ([]trafficSelector, error) {
		var out []trafficSelector
		for _, s := range list {
			ts, err := parseTS(s, v.protocols)
			if err != nil {
				return nil, unprotected(c, "%s traffic selector %q: %v: cannot tell which policy charon installed for it", side, s, err)
			}
			out = append(out, ts)
		}
		return out, nil
	}
	locals, err := parse("local", c.LocalTS)
	if err != nil {
		return nil, 0, err
	}
	remotes, err := parse("remote", c.RemoteTS)
	if err != nil {
		return nil, 0, err
	}
	f := c.flow()
	var pairs []selector
	srcPort := f.RemotePort
	for _, l := range locals {
		for _, r := range remotes {
			if l.from.Is4() != r.from.Is4() || l.from.Is4() != c.Local.Is4() {
				continue // charon installs no policy for a pair of two families
			}
			sel, ok, err := policySelector(ctx, l, r, f.Proto, v.lookupPort)
			if err != nil {
				return nil, 0, unprotected(c, "%v: cannot tell which policy charon installed for it", err)
			}
			if !ok || !sel.covers(c.Local, c.Remote, f) {
				continue
			}
			pairs = append(pairs, sel)
			if sel.dportMask == 0 { // the inbound policy's source port
				srcPort = 0
			}
		}
	}
	if len(pairs) == 0 {
		return nil, 0, unprotected(c, "no pair of its traffic selectors (local %s, remote %s) covers %s between %s and %s: "+
			"%s would not go through the child; %s",
			strings.Join(c.LocalTS, ", "), strings.Join(c.RemoteTS, ", "), flowWhat(f), c.Local, c.Remote, flowName(c), flowHint(c, f))
	}
	return pairs, srcPort, nil
}

// flowWhat says which packets the flow is, for messages about the
// control exchange as before ("UDP port 4501", "every UDP port").
func flowWhat(f Flow) string {
	if f.Proto == unix.IPPROTO_UDP && f.LocalPort == f.RemotePort {
		if f.LocalPort == 0 {
			return "every UDP port"
		}
		return fmt.Sprintf("UDP port %d", f.LocalPort)
	}
	return f.String()
}

// flowName names the flow's traffic.
func flowName(c Child) string {
	if c.Flow == (Flow{}) {
		return "control datagrams"
	}
	return "its packets"
}

// flowHint says which selectors would cover the flow.
func flowHint(c Child, f Flow) string {
	host := func(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }
	hint := fmt.Sprintf("set local_ts = %s and remote_ts = %s", host(c.Local), host(c.Remote))
	sel := func(p uint16) string {
		if p == 0 {
			return fmt.Sprintf("[%s]", protoName(f.Proto))
		}
		return fmt.Sprintf("[%s/%d]", protoName(f.Proto), p)
	}
	switch {
	case c.Flow == (Flow{}) && c.Port == 0:
	case c.Flow == (Flow{}):
		hint += fmt.Sprintf(" (or add [udp/%d] to both)", c.Port)
	default:
		hint += fmt.Sprintf(" (or add %s%s to local_ts and %s%s to remote_ts)", host(c.Local), sel(f.LocalPort), host(c.Remote), sel(f.RemotePort))
	}
	return hint
}

// verifyKernel proves protection by the kernel's XFRM policies (and, for
// a route-based child, its XFRM interfaces).
func (v *Verifier) verifyKernel(ctx context.Context, c Child, pairs []selector, srcPort uint16) (Proof, error) {
	mode, ok := kernelMode(c.Mode)
	if !ok {
		return Proof{}, unprotected(c, "mode %q is not an IPsec mode the kernel applies (want TUNNEL or TRANSPORT)", c.Mode)
	}
	for _, out := range pairs {
		if err := v.checkPolicy(ctx, c, out, dirOut, c.IfIDOut, mode); err != nil {
			return Proof{}, err
		}
		if err := v.checkPolicy(ctx, c, out.mirror(), dirIn, c.IfIDIn, mode); err != nil {
			return Proof{}, err
		}
	}
	p := Proof{SrcPort: srcPort}
	var how []string
	policies := fmt.Sprintf("the XFRM policies out (%s) and in (%s) require ESP with reqid %d in %s mode (level required)",
		pairs[0], pairs[0].mirror(), c.ReqID, modeName(mode))
	if len(pairs) > 1 {
		policies += fmt.Sprintf(", and so do those of %d more selector pairs", len(pairs)-1)
	}
	var outLink, inLink link
	if c.IfIDOut != 0 {
		l, err := v.outboundXfrmi(ctx, c)
		if err != nil {
			return Proof{}, err
		}
		outLink = l
	}
	if c.IfIDIn != 0 {
		if c.IfIDOut == c.IfIDIn {
			inLink = outLink
		} else {
			l, err := v.xfrmiByID(ctx, c, c.IfIDIn)
			if err != nil {
				return Proof{}, err
			}
			inLink = l
		}
		p.IfIndex, p.IfName = inLink.index, inLink.name
	}
	switch {
	case c.IfIDIn == 0 && c.IfIDOut == 0:
		how = append(how, "kernel IPsec: "+policies+": the kernel drops plaintext")
	default:
		how = append(how, fmt.Sprintf("route-based kernel IPsec (if_id in %d, out %d): %s", c.IfIDIn, c.IfIDOut, policies))
		if c.IfIDOut != 0 {
			how = append(how, fmt.Sprintf("the route from %s to %s goes into XFRM interface %s (index %d, if_id %d)",
				c.Local, c.Remote, outLink.name, outLink.index, outLink.ifID))
		}
		if c.IfIDIn != 0 {
			how = append(how, fmt.Sprintf("%s are accepted only from XFRM interface %s (index %d, if_id %d)",
				flowName(c), inLink.name, inLink.index, inLink.ifID))
		} else {
			how = append(how, "the kernel drops inbound plaintext")
		}
	}
	if srcPort != 0 {
		how = append(how, fmt.Sprintf("only from source port %d", srcPort))
	}
	p.How = strings.Join(how, "; ")
	return p, nil
}

// checkPolicy reads the policy of one direction with exactly the selector
// charon installs and checks that it allows only ESP with the child's
// reqid, at level required, in the child's mode.
func (v *Verifier) checkPolicy(ctx context.Context, c Child, sel selector, dir uint8, ifID uint32, mode uint8) error {
	name, consequence := "outbound", "the kernel would send SK_d in plaintext"
	if dir == dirIn {
		name, consequence = "inbound", "the kernel would deliver plaintext to the control port"
	}
	if c.Flow != (Flow{}) {
		consequence = "the kernel would send and accept its packets (" + c.Flow.String() + ") in plaintext"
	}
	what := fmt.Sprintf("%s XFRM policy %s", name, sel)
	if ifID != 0 {
		what += fmt.Sprintf(" if_id %d", ifID)
	}
	p, err := v.xfrm.getPolicy(ctx, sel, dir, ifID)
	switch {
	case errors.Is(err, errNotFound):
		return unprotected(c, "no %s with ESP and reqid %d: charon installed none (policies = no? an interface option "+
			"on the child? another process flushed them?); %s", what, c.ReqID, consequence)
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("control child %s: read %s: %w (mpsad needs CAP_NET_ADMIN to read XFRM policies)", c.Name, what, err)
	case err != nil:
		return fmt.Errorf("control child %s: read %s: %w", c.Name, what, err)
	}
	if p.dir != dir || !sameSelector(p.sel, sel) || p.ifID != ifID || p.marked || p.labelled {
		return unprotected(c, "the kernel answered the lookup of the %s with another policy (%s, direction %d, if_id %d, marked %v, labelled %v)",
			what, p.sel, p.dir, p.ifID, p.marked, p.labelled)
	}
	if p.action != actionAllow {
		return unprotected(c, "the %s blocks instead of requiring ESP with reqid %d: control datagrams cannot pass "+
			"(a drop shunt or a manual policy with action block replaced charon's)", what, c.ReqID)
	}
	for i, t := range p.tmpls {
		if t.proto != unix.IPPROTO_ESP {
			continue
		}
		switch {
		case t.reqid != c.ReqID:
			return unprotected(c, "the %s requires ESP with reqid %d, not the child's %d: it belongs to another CHILD_SA "+
				"(two children with the same traffic selectors?), so this child's SA is not the one that protects the control addresses",
				what, t.reqid, c.ReqID)
		case t.optional:
			return unprotected(c, "the ESP template of the %s is optional (level use): the kernel lets plaintext through it; "+
				"charon installs level required, so a manual policy replaced charon's: delete it and re-establish the child", what)
		case t.mode != mode && !(t.mode == modeTransport && ipcompBefore(p.tmpls[:i], mode)):
			return unprotected(c, "the ESP template of the %s is in %s mode, but the child is in %s mode: the policy is not charon's for this child",
				what, modeName(t.mode), modeName(mode))
		}
		return nil
	}
	seen := "none"
	if len(p.tmpls) > 0 {
		var ts []string
		for _, t := range p.tmpls {
			ts = append(ts, t.String())
		}
		seen = strings.Join(ts, ", ")
	}
	return unprotected(c, "the %s has no ESP template (templates: %s): nothing requires ESP with reqid %d; %s",
		what, seen, c.ReqID, consequence)
}

func (t template) String() string {
	s := fmt.Sprintf("%s reqid %d %s", tmplProto(t.proto), t.reqid, modeName(t.mode))
	if t.optional {
		s += " level use"
	}
	return s
}

// ipcompBefore reports whether an IPComp template in the child's mode
// precedes: charon then puts the ESP template in transport mode.
func ipcompBefore(tmpls []template, mode uint8) bool {
	for _, t := range tmpls {
		if t.proto == unix.IPPROTO_COMP && t.mode == mode {
			return true
		}
	}
	return false
}

func tmplProto(p uint8) string {
	switch p {
	case unix.IPPROTO_ESP:
		return "ESP"
	case unix.IPPROTO_AH:
		return "AH"
	case unix.IPPROTO_COMP:
		return "IPComp"
	}
	return fmt.Sprintf("protocol %d", p)
}

// sameSelector reports whether two selectors are equal in the kernel's
// layout, as the kernel compares them.
func sameSelector(a, b selector) bool {
	return string(a.encode()) == string(b.encode()) && a.ifindex == b.ifindex
}

// outboundXfrmi checks that the route from Local to Remote goes into the
// XFRM interface with the child's outbound if_id.
func (v *Verifier) outboundXfrmi(ctx context.Context, c Child) (link, error) {
	l, err := v.routeLink(ctx, c)
	if err != nil {
		return link{}, err
	}
	if l.kind != "xfrm" || l.ifID != c.IfIDOut {
		return link{}, unprotected(c, "route-based (if_id_out %d), but the route from %s to %s goes out %s (%s): "+
			"SK_d would leave in plaintext there, as no policy without that if_id requires ESP; route %s into the "+
			"XFRM interface with if_id %d (charon.install_routes_xfrmi = yes, or a route of your own)",
			c.IfIDOut, c.Local, c.Remote, l.name, linkKind(l), c.Remote, c.IfIDOut)
	}
	return l, nil
}

// xfrmiByID finds the XFRM interface with interface id id.
func (v *Verifier) xfrmiByID(ctx context.Context, c Child, id uint32) (link, error) {
	links, err := v.route.linksOfKind(ctx, "xfrm")
	if err != nil {
		return link{}, fmt.Errorf("control child %s: list XFRM interfaces: %w", c.Name, err)
	}
	for _, l := range links {
		if l.ifID == id {
			return l, nil
		}
	}
	return link{}, unprotected(c, "route-based (if_id_in %d), but there is no XFRM interface with if_id %d in this network namespace: "+
		"there is no link on which control datagrams could be told to have come through the child; create it "+
		"(ip link add xfrm-mpsa type xfrm if_id %d) in mpsad's namespace", id, id, id)
}

// routeLink looks up the route of a control datagram from Local to Remote
// and reads its output link.
func (v *Verifier) routeLink(ctx context.Context, c Child) (link, error) {
	r, err := v.route.getRoute(ctx, c.Local, c.Remote, c.flow())
	if err != nil {
		switch {
		case errors.Is(err, unix.ENETUNREACH), errors.Is(err, unix.EHOSTUNREACH):
			return link{}, unprotected(c, "no route from %s to %s (%v): the child's route is missing", c.Local, c.Remote, err)
		case errors.Is(err, unix.EINVAL):
			return link{}, unprotected(c, "the kernel refuses to route from %s to %s (%v): is %s an address of this host?",
				c.Local, c.Remote, err, c.Local)
		}
		return link{}, fmt.Errorf("control child %s: look up the route from %s to %s: %w", c.Name, c.Local, c.Remote, err)
	}
	if r.typ != unix.RTN_UNICAST || r.oif == 0 {
		return link{}, unprotected(c, "the route from %s to %s is of type %d, not a unicast route into a device", c.Local, c.Remote, r.typ)
	}
	l, err := v.route.getLink(ctx, r.oif)
	if err != nil {
		return link{}, fmt.Errorf("control child %s: read link %d (the route from %s to %s): %w", c.Name, r.oif, c.Local, c.Remote, err)
	}
	return l, nil
}

func linkKind(l link) string {
	if l.kind == "" {
		return "not a TUN or XFRM device"
	}
	return "a " + l.kind + " device"
}

// verifyLibipsec proves protection under kernel-libipsec: the route from
// Local to Remote goes into a TUN device, charon's, and only datagrams
// that arrived on it are accepted.
func (v *Verifier) verifyLibipsec(ctx context.Context, c Child, srcPort uint16) (Proof, error) {
	l, err := v.routeLink(ctx, c)
	if err != nil {
		return Proof{}, err
	}
	if l.kind != "tun" || (l.tunType != 0 && l.tunType != unix.IFF_TUN) {
		return Proof{}, unprotected(c, "kernel-libipsec, but the route from %s to %s goes out %s (%s), not into charon's TUN device: "+
			"%s would leave in plaintext and nothing tells inbound ones from plaintext (charon routes the remote "+
			"traffic selector into its TUN in table 220: is charon.install_routes = no, the routing rule for table 220 missing, "+
			"or another route more specific?)", c.Local, c.Remote, l.name, linkKind(l), flowName(c))
	}
	p := Proof{IfIndex: l.index, IfName: l.name, SrcPort: srcPort}
	p.How = fmt.Sprintf("kernel-libipsec: the route from %s to %s goes into charon's TUN %s (index %d); %s are accepted only from it",
		c.Local, c.Remote, l.name, l.index, flowName(c))
	if srcPort != 0 {
		p.How += fmt.Sprintf("; only from source port %d", srcPort)
	}
	return p, nil
}
