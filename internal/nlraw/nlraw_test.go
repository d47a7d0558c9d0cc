package nlraw

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func request(typ, flags uint16, seq uint32, body []byte) []byte {
	req := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	req = append(req, body...)
	binary.NativeEndian.PutUint32(req[0:4], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:6], typ)
	binary.NativeEndian.PutUint16(req[6:8], unix.NLM_F_REQUEST|flags)
	binary.NativeEndian.PutUint32(req[8:12], seq)
	return req
}

// TestDo runs requests the kernel answers in every way Do knows: a dump
// (answers, then the end), one answer ended by ErrStop, an error answer, and
// an acknowledgement; what the reads filled is zeroed afterwards.
func TestDo(t *testing.T) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatal(err)
	}
	tv := unix.Timeval{Sec: 5}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	ifinfo := make([]byte, unix.SizeofIfInfomsg)

	links := 0
	err = Do(fd, buf, request(unix.RTM_GETLINK, unix.NLM_F_DUMP, 1, ifinfo), func(typ uint16, data []byte) error {
		if typ == unix.RTM_NEWLINK {
			links++
		}
		return nil
	})
	if err != nil || links == 0 {
		t.Fatalf("link dump: %d links, %v", links, err)
	}
	if !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Error("the buffer still holds what the dump read")
	}

	lo := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(lo[4:8], 1) // ifi_index 1: lo
	answers := 0
	err = Do(fd, buf, request(unix.RTM_GETLINK, 0, 2, lo), func(typ uint16, data []byte) error {
		answers++
		return ErrStop
	})
	if err != nil || answers != 1 {
		t.Errorf("get lo: %d answers, %v", answers, err)
	}

	binary.NativeEndian.PutUint32(lo[4:8], 1<<30) // no such link
	err = Do(fd, buf, request(unix.RTM_GETLINK, 0, 3, lo), func(uint16, []byte) error { return nil })
	if !errors.Is(err, unix.ENODEV) {
		t.Errorf("get a missing link: %v, want ENODEV", err)
	}

	// An acknowledged request: the error answer ends it, and no other
	// answer comes.
	up := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(up[4:8], 1<<30)
	err = Do(fd, buf, request(unix.RTM_SETLINK, unix.NLM_F_ACK, 4, up), func(uint16, []byte) error {
		t.Error("an answer besides the acknowledgement")
		return nil
	})
	if !errors.Is(err, unix.ENODEV) {
		t.Errorf("set a missing link: %v, want ENODEV", err)
	}
}

// TestAppendAttr: header (length without the padding, type), the parts
// one after the other, padded to 4 octets.
func TestAppendAttr(t *testing.T) {
	got := AppendAttr([]byte{9, 9, 9, 9}, 7, []byte{1, 2}, []byte{3})
	want := binary.NativeEndian.AppendUint16([]byte{9, 9, 9, 9}, 7)
	want = binary.NativeEndian.AppendUint16(want, 7)
	want = append(want, 1, 2, 3, 0)
	if !bytes.Equal(got, want) {
		t.Errorf("AppendAttr = %v, want %v", got, want)
	}
}
