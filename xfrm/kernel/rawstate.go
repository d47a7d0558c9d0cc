package kernel

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/internal/nlraw"
)

// xfrmSocket is the backend's own NETLINK_XFRM socket, for the requests
// that carry or return keys, which it writes and reads in buffers of its
// own and zeroes afterwards (the netlink package would leave copies of the
// keys in buffers it allocates and drops):
//
//   - adding a state, with the XFRM_STATE_AF_UNSPEC flag, which the netlink
//     package cannot express: without it the kernel gives a state with an
//     empty selector the outer address family as its selector family, and
//     the state then refuses inner packets of the other family (IPv6 in
//     IPv4, IPv4 in IPv6). The shared SA must carry both. The request may
//     also set the first outbound sequence number (XFRMA_REPLAY_VAL) and a
//     soft packet limit;
//   - listing and reading states: the kernel's answers carry every state's
//     keys (charon's too).
//
// The socket has NETLINK_CAP_ACK set, so that an error answer does not
// echo the request, keys included.
type xfrmSocket struct {
	sock *nl.NetlinkSocket
	seq  uint32
	// buf receives the answers; the requests are serialized (Backend.mu,
	// or one caller), and what a read filled is zeroed after it.
	buf []byte
	// sent, if not nil, sees each request just before it is sent (tests).
	sent func([]byte)
}

func openXfrmSocket(ns netns.NsHandle) (*xfrmSocket, error) {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_XFRM)
	if err != nil {
		return nil, err
	}
	fd := s.GetFd()
	// Blocking reads with a bound: the socket is only used for requests
	// the kernel answers at once.
	tv := unix.Timeval{Sec: 10}
	for _, err := range []error{
		unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1),
		unix.SetNonblock(fd, false),
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv),
	} {
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("set up netlink socket: %w", err)
		}
	}
	return &xfrmSocket{sock: s, buf: make([]byte, 64<<10)}, nil
}

func (x *xfrmSocket) close() {
	if x.sock != nil {
		x.sock.Close()
	}
}

// newState is a state to add: the parts of a netlink.XfrmState the backend
// sets, its first outbound sequence number (the one before the first it
// sends) and its soft packet limit (0: none).
type newState struct {
	st          *netlink.XfrmState
	oseq        uint32
	softPackets uint64
}

// algoHead is the fixed part of struct xfrm_algo, xfrm_algo_auth or
// xfrm_algo_aead: the name in 64 bytes, the key length in bits and, for
// the latter two, the truncation or ICV length.
func algoHead(name string, keyBytes int, extra ...uint32) []byte {
	h := make([]byte, 64, 72)
	copy(h[:63], name)
	h = binary.NativeEndian.AppendUint32(h, uint32(keyBytes*8))
	for _, e := range extra {
		h = binary.NativeEndian.AppendUint32(h, e)
	}
	return h
}

// encodeNewSA writes the XFRM_MSG_NEWSA request for s into one buffer,
// sized up front so that appending never leaves a copy of a key behind.
func encodeNewSA(s newState, seq uint32) []byte {
	st := s.st
	size := unix.SizeofNlMsghdr + nl.SizeofXfrmUsersaInfo + 512
	for _, a := range []*netlink.XfrmStateAlgo{st.Auth, st.Crypt, st.Aead} {
		if a != nil {
			size += len(a.Key)
		}
	}
	b := make([]byte, unix.SizeofNlMsghdr, size)
	var msg nl.XfrmUsersaInfo
	msg.Family = uint16(nl.GetIPFamily(st.Dst))
	msg.Id.Daddr.FromIP(st.Dst)
	msg.Saddr.FromIP(st.Src)
	msg.Id.Proto = uint8(st.Proto)
	msg.Id.Spi = nl.Swap32(uint32(st.Spi))
	msg.Mode = uint8(st.Mode)
	msg.Reqid = uint32(st.Reqid)
	msg.ReplayWindow = uint8(st.ReplayWindow)
	msg.Flags = nl.XFRM_STATE_AF_UNSPEC
	msg.Lft.SoftByteLimit = nl.XFRM_INF
	msg.Lft.HardByteLimit = nl.XFRM_INF
	msg.Lft.SoftPacketLimit = nl.XFRM_INF
	msg.Lft.HardPacketLimit = nl.XFRM_INF
	if s.softPackets != 0 {
		msg.Lft.SoftPacketLimit = s.softPackets
	}
	b = append(b, msg.Serialize()...)
	if st.Auth != nil {
		b = nlraw.AppendAttr(b, nl.XFRMA_ALG_AUTH_TRUNC, algoHead(st.Auth.Name, len(st.Auth.Key), uint32(st.Auth.TruncateLen)), st.Auth.Key)
	}
	if st.Crypt != nil {
		b = nlraw.AppendAttr(b, nl.XFRMA_ALG_CRYPT, algoHead(st.Crypt.Name, len(st.Crypt.Key)), st.Crypt.Key)
	}
	if st.Aead != nil {
		b = nlraw.AppendAttr(b, nl.XFRMA_ALG_AEAD, algoHead(st.Aead.Name, len(st.Aead.Key), uint32(st.Aead.ICVLen)), st.Aead.Key)
	}
	if st.Ifid != 0 {
		b = nlraw.AppendAttr(b, nl.XFRMA_IF_ID, binary.NativeEndian.AppendUint32(nil, uint32(st.Ifid)))
	}
	if s.oseq != 0 {
		// struct xfrm_replay_state: oseq, seq, bitmap.
		rs := binary.NativeEndian.AppendUint32(make([]byte, 0, 12), s.oseq)
		b = nlraw.AppendAttr(b, nl.XFRMA_REPLAY_VAL, rs, make([]byte, 8))
	}
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:6], nl.XFRM_MSG_NEWSA)
	binary.NativeEndian.PutUint16(b[6:8], unix.NLM_F_REQUEST|unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	return b
}

// addState adds s.st (tunnel mode, no selector, no replay window, no ESN)
// with XFRM_STATE_AF_UNSPEC set, and zeroes the request afterwards.
func (x *xfrmSocket) addState(s newState) error {
	x.seq++
	req := encodeNewSA(s, x.seq)
	defer clear(req)
	if x.sent != nil {
		x.sent(req)
	}
	if err := x.exchange(req, nil); err != nil {
		return fmt.Errorf("add state: %w", err)
	}
	return nil
}

// exchange sends req and reads the answers into x.buf (nlraw.Do, which
// zeroes what each read filled) until the acknowledgement or the end of a
// dump, handing every other message to each (nil: none expected).
func (x *xfrmSocket) exchange(req []byte, each func(typ uint16, data []byte) error) error {
	if each == nil {
		each = func(uint16, []byte) error { return nil }
	}
	return nlraw.Do(x.sock.GetFd(), x.buf, req, each)
}

// stateInfo is what the backend reads of a state: never its keys.
type stateInfo struct {
	dst, src         netip.Addr // src unspecified: any source
	spi, reqid, ifid uint32
	proto, mode      uint8
	packets, bytes   uint64
	replay, failed   uint32
	oseq             uint32
	softPackets      uint64
	oseqMayWrap, esn bool
}

// parseState reads a NEWSA message (a dump entry or a GETSA answer).
func parseState(data []byte) (stateInfo, bool) {
	if len(data) < nl.SizeofXfrmUsersaInfo {
		return stateInfo{}, false
	}
	m := nl.DeserializeXfrmUsersaInfo(data)
	s := stateInfo{
		dst: xfrmAddr(m.Id.Daddr, m.Family), src: xfrmAddr(m.Saddr, m.Family),
		spi: nl.Swap32(m.Id.Spi), reqid: m.Reqid, proto: m.Id.Proto, mode: m.Mode,
		packets: m.Curlft.Packets, bytes: m.Curlft.Bytes,
		replay: m.Stats.Replay, failed: m.Stats.IntegrityFailed,
		softPackets: m.Lft.SoftPacketLimit,
		esn:         m.Flags&nl.XFRM_STATE_ESN != 0,
	}
	attrs, err := nl.ParseRouteAttr(data[nl.SizeofXfrmUsersaInfo:])
	if err != nil {
		return stateInfo{}, false
	}
	for _, a := range attrs {
		switch a.Attr.Type {
		case nl.XFRMA_IF_ID:
			if len(a.Value) >= 4 {
				s.ifid = binary.NativeEndian.Uint32(a.Value)
			}
		case nl.XFRMA_REPLAY_VAL:
			if len(a.Value) >= 4 {
				s.oseq = binary.NativeEndian.Uint32(a.Value)
			}
		case nl.XFRMA_SA_EXTRA_FLAGS:
			if len(a.Value) >= 4 {
				s.oseqMayWrap = binary.NativeEndian.Uint32(a.Value)&nl.XFRM_SA_XFLAG_OSEQ_MAY_WRAP != 0
			}
		}
	}
	return s, true
}

// xfrmAddr reads an address of family fam (the state's).
func xfrmAddr(a nl.XfrmAddress, fam uint16) netip.Addr {
	if fam == unix.AF_INET {
		return netip.AddrFrom4([4]byte(a[:4]))
	}
	return netip.AddrFrom16([16]byte(a[:16]))
}

// listStates dumps every ESP state of the namespace (parsed, keys not
// kept).
func (x *xfrmSocket) listStates() ([]stateInfo, error) {
	x.seq++
	req := make([]byte, unix.SizeofNlMsghdr)
	binary.NativeEndian.PutUint32(req[0:4], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:6], nl.XFRM_MSG_GETSA)
	binary.NativeEndian.PutUint16(req[6:8], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:12], x.seq)
	var out []stateInfo
	err := x.exchange(req, func(typ uint16, data []byte) error {
		if typ != nl.XFRM_MSG_NEWSA {
			return nil
		}
		if s, ok := parseState(data); ok && s.proto == unix.IPPROTO_ESP {
			out = append(out, s)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list states: %w", err)
	}
	return out, nil
}

// getState reads the ESP state with destination dst and SPI spi.
func (x *xfrmSocket) getState(dst netip.Addr, spi uint32) (stateInfo, error) {
	x.seq++
	var id nl.XfrmUsersaId
	ip := net.IP(dst.AsSlice())
	id.Daddr.FromIP(ip)
	id.Spi = nl.Swap32(spi)
	id.Family = uint16(nl.GetIPFamily(ip))
	id.Proto = unix.IPPROTO_ESP
	req := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+nl.SizeofXfrmUsersaId)
	req = append(req, id.Serialize()...)
	binary.NativeEndian.PutUint32(req[0:4], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:6], nl.XFRM_MSG_GETSA)
	binary.NativeEndian.PutUint16(req[6:8], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(req[8:12], x.seq)
	var (
		got   stateInfo
		found bool
	)
	err := x.exchange(req, func(typ uint16, data []byte) error {
		if typ == nl.XFRM_MSG_NEWSA {
			got, found = parseState(data)
		}
		return nlraw.ErrStop
	})
	if err != nil {
		return stateInfo{}, err
	}
	if !found {
		return stateInfo{}, unix.ESRCH
	}
	return got, nil
}

// listPolicies dumps the namespace's policies. The netlink package reads a
// selector's family from the address bytes, so an IPv6 prefix whose last
// 12 bytes are zero (fd00:2::/64) comes back as an IPv4-mapped address
// with no mask; this reads the family the kernel reports.
func (x *xfrmSocket) listPolicies() ([]netlink.XfrmPolicy, error) {
	x.seq++
	req := make([]byte, unix.SizeofNlMsghdr)
	binary.NativeEndian.PutUint32(req[0:4], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:6], nl.XFRM_MSG_GETPOLICY)
	binary.NativeEndian.PutUint16(req[6:8], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:12], x.seq)
	var out []netlink.XfrmPolicy
	err := x.exchange(req, func(typ uint16, data []byte) error {
		if typ != nl.XFRM_MSG_NEWPOLICY || len(data) < nl.SizeofXfrmUserpolicyInfo {
			return nil
		}
		info := nl.DeserializeXfrmUserpolicyInfo(data)
		fam := info.Sel.Family
		p := netlink.XfrmPolicy{
			Src:      selNet(info.Sel.Saddr, info.Sel.PrefixlenS, fam),
			Dst:      selNet(info.Sel.Daddr, info.Sel.PrefixlenD, fam),
			Dir:      netlink.Dir(info.Dir),
			Priority: int(info.Priority),
			Index:    int(info.Index),
			Action:   netlink.PolicyAction(info.Action),
		}
		attrs, err := nl.ParseRouteAttr(data[nl.SizeofXfrmUserpolicyInfo:])
		if err != nil {
			return nil
		}
		for _, a := range attrs {
			switch a.Attr.Type {
			case nl.XFRMA_IF_ID:
				if len(a.Value) >= 4 {
					p.Ifid = int(binary.NativeEndian.Uint32(a.Value))
				}
			case nl.XFRMA_TMPL:
				for b := a.Value; len(b) >= nl.SizeofXfrmUserTmpl; b = b[nl.SizeofXfrmUserTmpl:] {
					t := nl.DeserializeXfrmUserTmpl(b)
					p.Tmpls = append(p.Tmpls, netlink.XfrmPolicyTmpl{
						Dst:   net.IP(xfrmAddr(t.XfrmId.Daddr, t.Family).AsSlice()),
						Src:   net.IP(xfrmAddr(t.Saddr, t.Family).AsSlice()),
						Proto: netlink.Proto(t.XfrmId.Proto), Mode: netlink.Mode(t.Mode),
						Spi: int(nl.Swap32(t.XfrmId.Spi)), Reqid: int(t.Reqid),
					})
				}
			}
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list policies: %w", err)
	}
	return out, nil
}

// selNet is a selector's address and prefix length, of the selector's
// family.
func selNet(a nl.XfrmAddress, bits uint8, fam uint16) *net.IPNet {
	addr := xfrmAddr(a, fam)
	return &net.IPNet{IP: net.IP(addr.AsSlice()), Mask: net.CIDRMask(int(bits), addr.BitLen())}
}
