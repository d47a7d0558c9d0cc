package protect

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/internal/nlraw"
)

// requestTimeout bounds the wait for one answer of the kernel, which
// answers these requests at once; a context deadline that comes sooner
// wins.
const requestTimeout = 5 * time.Second

// nlSocket is a netlink socket of one protocol (NETLINK_XFRM or
// NETLINK_ROUTE) bound to the network namespace of the thread that opened
// it. Only the requests this package needs are written here, in the
// kernel's own layout, so that addresses keep the family the kernel
// reports (the netlink package guesses a policy's family from its address
// bytes).
type nlSocket struct {
	fd       int
	seq      uint32
	buf      []byte
	requests int // requests sent, for the tests
}

func openNetlink(proto int) (*nlSocket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// An error answer need not echo the request.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	return &nlSocket{fd: fd, buf: make([]byte, 64<<10)}, nil
}

func (s *nlSocket) close() error {
	if s == nil || s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// errNotFound is the kernel's ENOENT: no such policy (or link).
var errNotFound = unix.ENOENT

// do sends one request of type typ with body and hands every answer
// message to each, until the kernel's acknowledgement or error, the end of
// a dump (flags has NLM_F_DUMP), or, for any other request, the first
// answer.
func (s *nlSocket) do(ctx context.Context, typ, flags uint16, body []byte, each func(typ uint16, data []byte) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	timeout := requestTimeout
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d < timeout {
			timeout = d
		}
		if timeout <= 0 {
			return context.DeadlineExceeded
		}
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("netlink receive timeout: %w", err)
	}
	s.seq++
	req := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	req = append(req, body...)
	binary.NativeEndian.PutUint32(req[0:4], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:6], typ)
	binary.NativeEndian.PutUint16(req[6:8], unix.NLM_F_REQUEST|flags)
	binary.NativeEndian.PutUint32(req[8:12], s.seq)
	s.requests++
	if flags&unix.NLM_F_DUMP == 0 {
		// One answer, and no acknowledgement after it.
		next := each
		each = func(typ uint16, data []byte) error {
			if err := next(typ, data); err != nil {
				return err
			}
			return nlraw.ErrStop
		}
	}
	err := nlraw.Do(s.fd, s.buf, req, each)
	if errors.Is(err, unix.EAGAIN) {
		return fmt.Errorf("no answer from the kernel within %v", timeout)
	}
	return err
}

// get sends a request that the kernel answers with one message of type
// answer and parses that answer; errNotFound when there is none.
func get[T any](ctx context.Context, s *nlSocket, typ uint16, body []byte, answer uint16, parse func([]byte) (T, error)) (T, error) {
	var (
		v     T
		found bool
		perr  error
	)
	err := s.do(ctx, typ, 0, body, func(t uint16, data []byte) error {
		if t == answer {
			v, perr = parse(data)
			found = true
		}
		return nil
	})
	switch {
	case err != nil:
		return v, err
	case perr != nil:
		return v, perr
	case !found:
		return v, errNotFound
	}
	return v, nil
}

// attrs parses attributes, with the nested and byte-order flags cleared
// from their types.
func attrs(b []byte) (map[uint16][]byte, error) {
	list, err := nl.ParseRouteAttr(b)
	if err != nil {
		return nil, err
	}
	m := make(map[uint16][]byte, len(list))
	for _, a := range list {
		m[a.Attr.Type&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER)] = a.Value
	}
	return m, nil
}

// Layout of the XFRM structures (linux/xfrm.h).
const (
	sizeofSelector   = 56  // struct xfrm_selector
	sizeofPolicyID   = 64  // struct xfrm_userpolicy_id
	sizeofPolicyInfo = 168 // struct xfrm_userpolicy_info
	sizeofTmpl       = 64  // struct xfrm_user_tmpl
)

// encode writes the selector in the layout of struct xfrm_selector: ports
// and masks in network order, addresses of an IPv4 selector in the first
// four octets and zeroes after them, as charon writes them.
func (s selector) encode() []byte {
	b := make([]byte, sizeofSelector)
	copy(b[0:16], s.dst.Addr().AsSlice())
	copy(b[16:32], s.src.Addr().AsSlice())
	binary.BigEndian.PutUint16(b[32:34], s.dport)
	binary.BigEndian.PutUint16(b[34:36], s.dportMask)
	binary.BigEndian.PutUint16(b[36:38], s.sport)
	binary.BigEndian.PutUint16(b[38:40], s.sportMask)
	binary.NativeEndian.PutUint16(b[40:42], s.family())
	b[42] = uint8(s.dst.Bits())
	b[43] = uint8(s.src.Bits())
	b[44] = s.proto
	// ifindex and user stay 0, as charon leaves them without an
	// interface option on the child.
	return b
}

// decodeSelector reads a struct xfrm_selector.
func decodeSelector(b []byte) (selector, bool) {
	if len(b) < sizeofSelector {
		return selector{}, false
	}
	fam := binary.NativeEndian.Uint16(b[40:42])
	addr := func(a []byte) (netip.Addr, bool) {
		switch fam {
		case unix.AF_INET:
			return netip.AddrFrom4([4]byte(a[:4])), true
		case unix.AF_INET6:
			return netip.AddrFrom16([16]byte(a[:16])), true
		}
		return netip.Addr{}, false
	}
	dst, ok1 := addr(b[0:16])
	src, ok2 := addr(b[16:32])
	if !ok1 || !ok2 {
		return selector{}, false
	}
	s := selector{
		dst:       netip.PrefixFrom(dst, int(b[42])),
		src:       netip.PrefixFrom(src, int(b[43])),
		dport:     binary.BigEndian.Uint16(b[32:34]),
		dportMask: binary.BigEndian.Uint16(b[34:36]),
		sport:     binary.BigEndian.Uint16(b[36:38]),
		sportMask: binary.BigEndian.Uint16(b[38:40]),
		proto:     b[44],
		ifindex:   int32(binary.NativeEndian.Uint32(b[48:52])),
	}
	return s, s.dst.IsValid() && s.src.IsValid()
}

// template is what Verify reads of a struct xfrm_user_tmpl.
type template struct {
	proto    uint8
	reqid    uint32
	mode     uint8
	optional bool
}

// policy is what Verify reads of a struct xfrm_userpolicy_info and its
// attributes.
type policy struct {
	sel      selector
	dir      uint8
	action   uint8
	ifID     uint32
	marked   bool
	labelled bool
	tmpls    []template
}

// parsePolicy reads an XFRM_MSG_NEWPOLICY message.
func parsePolicy(data []byte) (policy, error) {
	if len(data) < sizeofPolicyInfo {
		return policy{}, fmt.Errorf("short policy message (%d octets)", len(data))
	}
	sel, ok := decodeSelector(data)
	if !ok {
		return policy{}, errors.New("policy message with a selector of unknown family")
	}
	p := policy{sel: sel, dir: data[160], action: data[161]}
	as, err := attrs(data[sizeofPolicyInfo:])
	if err != nil {
		return policy{}, fmt.Errorf("policy attributes: %w", err)
	}
	if v, ok := as[nl.XFRMA_IF_ID]; ok && len(v) >= 4 {
		p.ifID = binary.NativeEndian.Uint32(v)
	}
	if v, ok := as[nl.XFRMA_MARK]; ok && len(v) >= 8 {
		p.marked = binary.NativeEndian.Uint32(v[0:4]) != 0 || binary.NativeEndian.Uint32(v[4:8]) != 0
	}
	_, p.labelled = as[nl.XFRMA_SEC_CTX]
	for t := as[nl.XFRMA_TMPL]; len(t) >= sizeofTmpl; t = t[sizeofTmpl:] {
		p.tmpls = append(p.tmpls, template{
			proto:    t[20],
			reqid:    binary.NativeEndian.Uint32(t[44:48]),
			mode:     t[48],
			optional: t[50] != 0,
		})
	}
	return p, nil
}

// getPolicy reads the main-type policy of direction dir with exactly the
// selector sel and interface id ifID (0: none), without a mark:
// XFRM_MSG_GETPOLICY, one request, answered from the kernel's policy hash
// whatever the number of policies. The error is errNotFound when there is
// none.
func (s *nlSocket) getPolicy(ctx context.Context, sel selector, dir uint8, ifID uint32) (policy, error) {
	body := make([]byte, 0, sizeofPolicyID+8)
	body = append(body, sel.encode()...)
	body = append(body, 0, 0, 0, 0) // index 0: look up by selector
	body = append(body, dir, 0, 0, 0)
	if ifID != 0 {
		body = nlraw.AppendAttr(body, nl.XFRMA_IF_ID, binary.NativeEndian.AppendUint32(nil, ifID))
	}
	return get(ctx, s, nl.XFRM_MSG_GETPOLICY, body, nl.XFRM_MSG_NEWPOLICY, parsePolicy)
}

// route is what Verify reads of a route lookup.
type route struct {
	oif   int
	table uint32
	typ   uint8
}

// getRoute asks the kernel which route a packet of flow f from src to
// dst takes (the protocol and the ports that are not 0 go into the
// lookup, so that routing rules on them count).
func (s *nlSocket) getRoute(ctx context.Context, src, dst netip.Addr, f Flow) (route, error) {
	fam := uint8(unix.AF_INET)
	if dst.Is6() {
		fam = unix.AF_INET6
	}
	body := make([]byte, unix.SizeofRtMsg, 64)
	body[0] = fam
	body[1] = uint8(dst.BitLen()) // dst_len
	body[2] = uint8(src.BitLen()) // src_len
	body = nlraw.AppendAttr(body, unix.RTA_DST, dst.AsSlice())
	body = nlraw.AppendAttr(body, unix.RTA_SRC, src.AsSlice())
	if f.LocalPort != 0 || f.RemotePort != 0 || f.Proto != unix.IPPROTO_UDP {
		body = nlraw.AppendAttr(body, unix.RTA_IP_PROTO, []byte{f.Proto})
	}
	if f.LocalPort != 0 {
		body = nlraw.AppendAttr(body, unix.RTA_SPORT, binary.BigEndian.AppendUint16(nil, f.LocalPort))
	}
	if f.RemotePort != 0 {
		body = nlraw.AppendAttr(body, unix.RTA_DPORT, binary.BigEndian.AppendUint16(nil, f.RemotePort))
	}
	r, err := get(ctx, s, unix.RTM_GETROUTE, body, unix.RTM_NEWROUTE, parseRoute)
	if errors.Is(err, errNotFound) {
		return route{}, errors.New("the kernel answered without a route")
	}
	return r, err
}

// parseRoute reads an RTM_NEWROUTE message.
func parseRoute(data []byte) (route, error) {
	if len(data) < unix.SizeofRtMsg {
		return route{}, fmt.Errorf("short route message (%d octets)", len(data))
	}
	r := route{table: uint32(data[4]), typ: data[7]}
	as, err := attrs(data[unix.SizeofRtMsg:])
	if err != nil {
		return route{}, fmt.Errorf("route attributes: %w", err)
	}
	if v, ok := as[unix.RTA_OIF]; ok && len(v) >= 4 {
		r.oif = int(binary.NativeEndian.Uint32(v))
	}
	if v, ok := as[unix.RTA_TABLE]; ok && len(v) >= 4 {
		r.table = binary.NativeEndian.Uint32(v)
	}
	return r, nil
}

// link is what Verify reads of a network interface.
type link struct {
	index int
	name  string
	kind  string // IFLA_INFO_KIND: "tun", "xfrm", "veth", "" ...
	// ifID is the XFRM interface id of an "xfrm" link.
	ifID uint32
	// tunType is IFF_TUN or IFF_TAP for a "tun" link, 0 when the kernel
	// does not say.
	tunType uint8
}

// parseLink reads an RTM_NEWLINK message.
func parseLink(data []byte) (link, error) {
	if len(data) < unix.SizeofIfInfomsg {
		return link{}, fmt.Errorf("short link message (%d octets)", len(data))
	}
	l := link{index: int(int32(binary.NativeEndian.Uint32(data[4:8])))}
	as, err := attrs(data[unix.SizeofIfInfomsg:])
	if err != nil {
		return link{}, fmt.Errorf("link attributes: %w", err)
	}
	if v, ok := as[unix.IFLA_IFNAME]; ok {
		l.name = cString(v)
	}
	info, ok := as[unix.IFLA_LINKINFO]
	if !ok {
		return l, nil
	}
	ias, err := attrs(info)
	if err != nil {
		return link{}, fmt.Errorf("link %s: link info: %w", l.name, err)
	}
	l.kind = cString(ias[unix.IFLA_INFO_KIND])
	data2, ok := ias[unix.IFLA_INFO_DATA]
	if !ok {
		return l, nil
	}
	das, err := attrs(data2)
	if err != nil {
		return link{}, fmt.Errorf("link %s: link data: %w", l.name, err)
	}
	switch l.kind {
	case "xfrm":
		if v, ok := das[unix.IFLA_XFRM_IF_ID]; ok && len(v) >= 4 {
			l.ifID = binary.NativeEndian.Uint32(v)
		}
	case "tun":
		if v, ok := das[unix.IFLA_TUN_TYPE]; ok && len(v) >= 1 {
			l.tunType = v[0]
		}
	}
	return l, nil
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// rtextFilterSkipStats asks the kernel to leave the counters out of link
// messages (RTEXT_FILTER_SKIP_STATS).
const rtextFilterSkipStats = 1 << 3

// getLink reads the link with index i: RTM_GETLINK, one request.
func (s *nlSocket) getLink(ctx context.Context, i int) (link, error) {
	body := make([]byte, unix.SizeofIfInfomsg, 32)
	binary.NativeEndian.PutUint32(body[4:8], uint32(int32(i)))
	body = nlraw.AppendAttr(body, unix.IFLA_EXT_MASK, binary.NativeEndian.AppendUint32(nil, rtextFilterSkipStats))
	return get(ctx, s, unix.RTM_GETLINK, body, unix.RTM_NEWLINK, parseLink)
}

// linksOfKind lists the links of one kind: an RTM_GETLINK dump that the
// kernel filters by kind, so the answer holds only those links (the kind is
// checked here again for kernels that do not filter).
func (s *nlSocket) linksOfKind(ctx context.Context, kind string) ([]link, error) {
	body := make([]byte, unix.SizeofIfInfomsg, 48)
	body = nlraw.AppendAttr(body, unix.IFLA_EXT_MASK, binary.NativeEndian.AppendUint32(nil, rtextFilterSkipStats))
	body = nlraw.AppendAttr(body, unix.IFLA_LINKINFO|unix.NLA_F_NESTED, nlraw.AppendAttr(nil, unix.IFLA_INFO_KIND, append([]byte(kind), 0)))
	var out []link
	err := s.do(ctx, unix.RTM_GETLINK, unix.NLM_F_DUMP, body, func(typ uint16, data []byte) error {
		if typ != unix.RTM_NEWLINK {
			return nil
		}
		l, err := parseLink(data)
		if err != nil {
			return err
		}
		if l.kind == kind {
			out = append(out, l)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
