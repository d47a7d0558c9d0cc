package kernel

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// xfrmSocket is the backend's own NETLINK_XFRM socket, for the one request
// the netlink package cannot express: adding a state with the
// XFRM_STATE_AF_UNSPEC flag. Without that flag the kernel gives a state
// with an empty selector the outer address family as its selector family,
// and the state then refuses inner packets of the other family (IPv6 in
// IPv4, IPv4 in IPv6). The shared SA must carry both.
type xfrmSocket struct {
	sockets map[int]*nl.SocketHandle
}

func (x *xfrmSocket) close() {
	for _, s := range x.sockets {
		s.Close()
	}
}

// addState adds st (tunnel mode, no selector, no replay window, no ESN)
// with XFRM_STATE_AF_UNSPEC set.
func (x *xfrmSocket) addState(st *netlink.XfrmState) error {
	req := &nl.NetlinkRequest{
		NlMsghdr: unix.NlMsghdr{
			Len:   uint32(unix.SizeofNlMsghdr),
			Type:  nl.XFRM_MSG_NEWSA,
			Flags: unix.NLM_F_REQUEST | unix.NLM_F_CREATE | unix.NLM_F_EXCL | unix.NLM_F_ACK,
		},
		Sockets: x.sockets,
	}
	msg := &nl.XfrmUsersaInfo{}
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
	req.AddData(msg)
	if st.Auth != nil {
		a := nl.XfrmAlgoAuth{AlgKeyLen: uint32(len(st.Auth.Key) * 8), AlgTruncLen: uint32(st.Auth.TruncateLen), AlgKey: st.Auth.Key}
		copy(a.AlgName[:63], st.Auth.Name)
		req.AddData(nl.NewRtAttr(nl.XFRMA_ALG_AUTH_TRUNC, a.Serialize()))
	}
	if st.Crypt != nil {
		a := nl.XfrmAlgo{AlgKeyLen: uint32(len(st.Crypt.Key) * 8), AlgKey: st.Crypt.Key}
		copy(a.AlgName[:63], st.Crypt.Name)
		req.AddData(nl.NewRtAttr(nl.XFRMA_ALG_CRYPT, a.Serialize()))
	}
	if st.Aead != nil {
		a := nl.XfrmAlgoAEAD{AlgKeyLen: uint32(len(st.Aead.Key) * 8), AlgICVLen: uint32(st.Aead.ICVLen), AlgKey: st.Aead.Key}
		copy(a.AlgName[:63], st.Aead.Name)
		req.AddData(nl.NewRtAttr(nl.XFRMA_ALG_AEAD, a.Serialize()))
	}
	if st.Ifid != 0 {
		req.AddData(nl.NewRtAttr(nl.XFRMA_IF_ID, nl.Uint32Attr(uint32(st.Ifid))))
	}
	if _, err := req.Execute(unix.NETLINK_XFRM, 0); err != nil {
		return fmt.Errorf("add state: %w", err)
	}
	return nil
}
