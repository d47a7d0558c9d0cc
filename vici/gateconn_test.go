package vici

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	govici "github.com/strongswan/govici/vici"
)

// packet encodes a VICI packet: type, optional name, and key=value pairs.
func packet(typ byte, name string, kv ...string) []byte {
	body := []byte{typ}
	if name != "" {
		body = append(body, byte(len(name)))
		body = append(body, name...)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		body = append(body, 3, byte(len(kv[i])))
		body = append(body, kv[i]...)
		body = binary.BigEndian.AppendUint16(body, uint16(len(kv[i+1])))
		body = append(body, kv[i+1]...)
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// TestSubscribeWithEventBeforeConfirm replays what charon does when an
// event is raised between registering a client and confirming it: the
// event for the type registered first is written before the confirmation
// of the second. Through govici alone, Subscribe never returns; through
// gateConn it returns and the event follows.
func TestSubscribeWithEventBeforeConfirm(t *testing.T) {
	client, server := net.Pipe()
	t.Cleanup(func() { client.Close(); server.Close() })
	c, err := newClient("pipe", func(string, string) (net.Conn, error) { return client, nil })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	serverErr := make(chan error, 1)
	go func() {
		for i, name := range []string{"ike-updown", "child-updown"} {
			pkt, err := readPacket(server)
			if err != nil {
				serverErr <- err
				return
			}
			if pkt[4] != pktEventRegister || string(pkt[6:6+int(pkt[5])]) != name {
				serverErr <- errUnexpected(pkt)
				return
			}
			if i == 1 {
				// Two events overtake the confirmation.
				server.Write(packet(pktEvent, "ike-updown", "seq", "1"))
				server.Write(packet(pktEvent, "ike-updown", "seq", "2"))
			}
			server.Write(packet(pktEventConfirm, ""))
		}
		serverErr <- nil
	}()

	ch := make(chan govici.Event, 8)
	c.NotifyEvents(ch)
	done := make(chan error, 1)
	go func() { done <- c.Subscribe("ike-updown", "child-updown") }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Subscribe deadlocked on an event that overtook its confirmation")
	}
	if err := <-serverErr; err != nil {
		t.Fatal(err)
	}
	for want := range []string{"1", "2"} {
		select {
		case ev := <-ch:
			if ev.Name != "ike-updown" || ev.Message.Get("seq") != []string{"1", "2"}[want] {
				t.Errorf("event %d: %s %v", want, ev.Name, ev.Message)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("held event %d never delivered", want+1)
		}
	}
}

type errUnexpected []byte

func (e errUnexpected) Error() string { return "unexpected packet " + string(e) }

// TestGateConnReadDeadline: a read deadline ends a Read that has nothing
// to deliver (govici's watchdog relies on it), and packets that arrived
// before are still delivered.
func TestGateConnReadDeadline(t *testing.T) {
	client, server := net.Pipe()
	t.Cleanup(func() { client.Close(); server.Close() })
	g := newGateConn(client)
	g.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 64)
	if _, err := g.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v", err)
	}
	g.SetReadDeadline(time.Time{})
	go server.Write(packet(pktEventConfirm, ""))
	n, err := g.Read(buf)
	if err != nil || n != 5 || buf[4] != pktEventConfirm {
		t.Fatalf("Read = %d %v % x", n, err, buf[:n])
	}
	// With the gate closed an event waits and a later response passes it.
	g.hold()
	go func() {
		server.Write(packet(pktEvent, "ike-updown"))
		server.Write(packet(pktEventConfirm, ""))
	}()
	if n, err = g.Read(buf); err != nil || buf[4] != pktEventConfirm {
		t.Fatalf("gate closed: first Read = % x %v, want the confirmation", buf[:n], err)
	}
	g.release()
	if n, err = g.Read(buf); err != nil || buf[4] != pktEvent {
		t.Fatalf("gate open: Read = % x %v, want the held event", buf[:n], err)
	}
	g.Close()
	if _, err := g.Read(buf); err == nil {
		t.Fatal("Read after Close succeeded")
	}
}
