package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/nettest"
)

// connectLAN opens a TCP connection from a's LAN address to b's and
// returns both ends.
func connectLAN(t *testing.T, a, b *node) (client, server net.Conn) {
	t.Helper()
	var ln net.Listener
	if err := b.ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(b.lanAddr(), 0).String())
		return err
	}); err != nil {
		t.Fatalf("listen on %s: %v", b.name, err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	if err := a.ns.Do(func() error {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(a.lanAddr(), 0)), Timeout: 10 * time.Second}
		var err error
		client, err = d.Dial("tcp", ln.Addr().String())
		return err
	}); err != nil {
		t.Fatalf("TCP %s -> %s: %v", a.name, b.name, err)
	}
	server = <-accepted
	if server == nil {
		client.Close()
		t.Fatalf("TCP %s -> %s: accept failed", a.name, b.name)
	}
	// Whatever the test does with them, they are closed when it ends.
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// transferTCP sends size random octets over TCP from a's LAN address to
// b's and checks that they arrive intact.
func transferTCP(t *testing.T, a, b *node, size int) {
	t.Helper()
	conn, srv := connectLAN(t, a, b)
	got := make(chan [32]byte, 1)
	done := make(chan struct{})
	// Should the test fail before the transfer ends, the receiver stops
	// (connectLAN's cleanup, which runs after this one, closes srv too
	// late to wait for it here).
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	go func() {
		defer close(done)
		defer srv.Close()
		srv.SetDeadline(time.Now().Add(time.Minute))
		h := sha256.New()
		io.Copy(h, srv)
		var sum [32]byte
		h.Sum(sum[:0])
		got <- sum
	}()
	data := make([]byte, size)
	rand.Read(data)
	conn.SetDeadline(time.Now().Add(time.Minute))
	if _, err := io.Copy(conn, bytes.NewReader(data)); err != nil {
		t.Fatalf("TCP %s -> %s: %v", a.name, b.name, err)
	}
	conn.Close()
	if sum := <-got; sum != sha256.Sum256(data) {
		t.Fatalf("TCP %s -> %s: %d octets arrived damaged or incomplete", a.name, b.name, size)
	}
}

// startCapture runs tcpdump with filter on n's underlay link until the
// test ends or Stop is called.
func startCapture(t *testing.T, n *node, filter string) *nettest.Capture {
	t.Helper()
	return startCaptureOn(t, n, "eth0", filter)
}

// startCaptureOn runs tcpdump with args (options, then the filter) on
// n's link until the test ends or Stop is called.
func startCaptureOn(t *testing.T, n *node, link string, args ...string) *nettest.Capture {
	t.Helper()
	c, err := nettest.StartCapture(n.ns, link, args...)
	if err != nil {
		t.Fatalf("capture on %s's %s: %v", n.name, link, err)
	}
	t.Cleanup(func() { c.Stop(0) })
	return c
}

// TestSharedSA: every member gets the same SPI; ping and TCP between every
// pair of member LANs travel directly member to member as raw ESP with that
// SPI, and none of it passes the controller.
func TestSharedSA(t *testing.T) {
	e := newEnv(t, envOptions{members: 3})
	spi := e.waitSPI(e.mems...)
	t.Logf("group SPI %s", spi)
	var caps []*nettest.Capture
	for _, m := range e.mems {
		caps = append(caps, startCapture(t, m, "ip proto 50"))
	}
	ctlCap := startCapture(t, e.ctl, "ip proto 50 or (udp port 4500)")
	for _, a := range e.mems {
		for _, b := range e.mems {
			if a == b {
				continue
			}
			if sent, recv := ping(t, a, b, 5, "0.05"); recv != sent {
				t.Errorf("ping %s -> %s: %d of %d answered", a.name, b.name, recv, sent)
			}
			transferTCP(t, a, b, 1<<20)
		}
	}
	ctlLines := ctlCap.Stop(0)
	for i, c := range caps {
		lines := c.Stop(0)
		m := e.mems[i]
		toOthers := 0
		for _, l := range lines {
			if !strings.Contains(l, fmt.Sprintf("ESP(spi=%s,", spi)) {
				t.Errorf("%s: ESP with another SPI: %s", m.name, l)
				continue
			}
			for _, o := range e.mems {
				if o != m && strings.Contains(l, fmt.Sprintf("%s > %s:", m.peer.Underlay, o.peer.Underlay)) {
					toOthers++
				}
			}
		}
		// 2 peers x (5 pings + a 1 MiB TCP transfer) each way
		if toOthers < 20 {
			t.Errorf("%s sent %d ESP packets straight to other members; want many (capture: %d lines)", m.name, toOthers, len(lines))
		}
	}
	esp := 0
	for _, l := range ctlLines {
		if strings.Contains(l, "ESP(") && !strings.Contains(l, "UDP-encap") {
			esp++
		}
	}
	// Member-to-member traffic through the controller would show as raw
	// ESP or as a flood of UDP-encapsulated ESP on its link; the control
	// exchange itself is a handful of datagrams.
	if esp > 0 || len(ctlLines) > 40 {
		t.Errorf("controller's link carried %d raw ESP and %d packets in all while members exchanged traffic:\n%s", esp, len(ctlLines), strings.Join(ctlLines, "\n"))
	}
	for _, m := range e.mems {
		st := m.status(t)
		g := st.Groups[0]
		if g.SPI != spi || len(g.InboundSPIs) != 1 || g.Controller == nil || g.Controller.State != "up" {
			t.Errorf("%s status: %+v", m.name, g)
		}
	}
	// mpsactl status --json: a member's group has outbound_spi and
	// inbound_spis (and its data plane's drops), a controller's has
	// members and none of those.
	for _, m := range e.mems {
		g := m.statusJSON(t)[0]
		var gspi, out string
		var in []string
		json.Unmarshal(g["spi"], &gspi)
		json.Unmarshal(g["outbound_spi"], &out)
		json.Unmarshal(g["inbound_spis"], &in)
		if gspi != spi || out != spi || !slices.Equal(in, []string{spi}) {
			t.Errorf("%s: status --json has spi %s, outbound_spi %s, inbound_spis %s; want %s", m.name, g["spi"], g["outbound_spi"], g["inbound_spis"], spi)
		}
		if _, has := g["dataplane_drops"]; !has {
			t.Errorf("%s: status --json has no dataplane_drops", m.name)
		}
		if _, has := g["members"]; has {
			t.Errorf("%s: status --json has members", m.name)
		}
	}
	cg := e.ctl.statusJSON(t)[0]
	var cspi string
	json.Unmarshal(cg["spi"], &cspi)
	if cspi != spi || cg["members"] == nil {
		t.Errorf("controller: status --json has spi %s, members %s", cg["spi"], cg["members"])
	}
	for _, k := range []string{"outbound_spi", "inbound_spis", "dataplane_drops"} {
		if _, has := cg[k]; has {
			t.Errorf("controller: status --json has %s: %s", k, cg[k])
		}
	}
	var members []map[string]any
	if err := json.Unmarshal(cg["members"], &members); err != nil || len(members) != 3 {
		t.Errorf("controller: status --json members %s (%v)", cg["members"], err)
	}
	for _, m := range members {
		if id, _ := m["id"].(string); id == "" || m["address"] == nil || m["acked_spi"] != spi {
			t.Errorf("controller: status --json member %v; want id, address and acked_spi %s", m, spi)
		}
	}

	cs := e.ctl.status(t)
	if len(cs.Groups[0].Members) != 3 {
		t.Fatalf("controller lists %d members", len(cs.Groups[0].Members))
	}
	for _, m := range cs.Groups[0].Members {
		if m.AckedSPI != spi {
			t.Errorf("member %s acked %q, want %s", m.ID, m.AckedSPI, spi)
		}
	}
}
