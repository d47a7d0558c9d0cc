package vici

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	govici "github.com/strongswan/govici/vici"
)

// VICI command packet types (strongSwan's vici_operation_t).
const (
	pktCmdRequest  = 0
	pktCmdResponse = 1
	pktCmdUnknown  = 2
)

// fakeCharon answers the VICI commands the watcher sends (version, stats,
// get-algorithms, list-sas with no IKE SA) and confirms every event
// registration, on a Unix socket of its own. The real charon runs in the
// tests of charon_test.go; this one can fail a command on purpose.
type fakeCharon struct {
	t      *testing.T
	socket string
	ln     net.Listener

	mu sync.Mutex
	// failAlgorithms is how many get-algorithms requests are answered
	// as an unknown command (as a charon without the command would).
	failAlgorithms int
	// algorithms counts the get-algorithms requests.
	algorithms int
}

func newFakeCharon(t *testing.T) *fakeCharon {
	f := &fakeCharon{t: t, socket: filepath.Join(t.TempDir(), "charon.vici")}
	ln, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	f.ln = ln
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				f.serve(c)
			}()
		}
	}()
	return f
}

// serve answers one session until it ends.
func (f *fakeCharon) serve(c net.Conn) {
	defer c.Close()
	for {
		pkt, err := readPacket(c)
		if err != nil {
			return
		}
		typ, name := pkt[4], ""
		if len(pkt) > 5 && len(pkt) >= 6+int(pkt[5]) {
			name = string(pkt[6 : 6+int(pkt[5])])
		}
		var out []byte
		switch typ {
		case pktEventRegister, pktEventUnregister:
			out = frame(pktEventConfirm, nil)
		case pktCmdRequest:
			out = f.answer(name)
		default:
			return
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// answer is the response packet to the command name.
func (f *fakeCharon) answer(name string) []byte {
	m := govici.NewMessage()
	set := func(k string, v any) {
		if err := m.Set(k, v); err != nil {
			f.t.Error(err)
		}
	}
	switch name {
	case "version":
		set("daemon", "charon")
		set("version", "5.9.8-fake")
	case "stats":
		ike := govici.NewMessage()
		if err := ike.Set("total", "0"); err != nil {
			f.t.Error(err)
		}
		set("ikesas", ike)
		set("plugins", []string{"charon", "aes", "kernel-netlink"})
	case "get-algorithms":
		f.mu.Lock()
		f.algorithms++
		fail := f.failAlgorithms > 0
		if fail {
			f.failAlgorithms--
		}
		f.mu.Unlock()
		if fail {
			return frame(pktCmdUnknown, nil)
		}
		enc := govici.NewMessage()
		if err := enc.Set("AES_CBC", "aes"); err != nil {
			f.t.Error(err)
		}
		set("encryption", enc)
	case "list-sas":
	default:
		return frame(pktCmdUnknown, nil)
	}
	return frame(pktCmdResponse, wireEncode(f.t, m))
}

// testLog writes a logger's lines to the test's log.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

// frame is a VICI packet of type typ (without a name) and body.
func frame(typ byte, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(1+len(body)))
	return append(append(b, typ), body...)
}

// TestWatcherAsksCharonAgain: a session whose get-algorithms failed
// delivers its updates without Charon, and asks again at each periodic
// resync until charon answers; that resync's update and the later ones
// carry the answer.
func TestWatcherAsksCharonAgain(t *testing.T) {
	f := newFakeCharon(t)
	f.failAlgorithms = 2
	updates := make(chan Update, 64)
	w := NewWatcher(WatcherOptions{Socket: f.socket, ResyncInterval: 20 * time.Millisecond, OmitSnapshots: true,
		Logger:   slog.New(slog.NewTextHandler(testLog{t}, nil)),
		OnUpdate: func(u Update) { updates <- u }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	timeout := time.After(30 * time.Second)
	var resyncs []*Charon
	for {
		select {
		case u := <-updates:
			if u.Cause != CauseResync {
				t.Fatalf("update %d: cause %s", u.Seq, u.Cause)
			}
			resyncs = append(resyncs, u.Charon)
		case <-timeout:
			t.Fatalf("charon never said which plugins it has: %d resyncs", len(resyncs))
		}
		if n := len(resyncs); n > 0 && resyncs[n-1] != nil {
			break
		} else if n > 10 {
			t.Fatalf("charon never said which plugins it has in %d resyncs", n)
		}
	}
	f.mu.Lock()
	asked := f.algorithms
	f.mu.Unlock()
	// Once at connect, then once per resync until the third try.
	if len(resyncs) != 3 || resyncs[0] != nil || resyncs[1] != nil || asked != 3 {
		t.Fatalf("resyncs carried %v, get-algorithms asked %d times; want nil, nil, then charon at the third", resyncs, asked)
	}
	ch := resyncs[2]
	if !ch.HasPlugin("kernel-netlink") || !ch.HasAlgorithm("encryption", "AES_CBC") {
		t.Fatalf("charon %+v", ch)
	}
	// Answered: the next resyncs carry the same answer and ask no more.
	for range 2 {
		select {
		case u := <-updates:
			if u.Charon != ch {
				t.Fatalf("a later resync carries %p, not %p", u.Charon, ch)
			}
		case <-timeout:
			t.Fatal("no more resyncs")
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.algorithms != 3 {
		t.Fatalf("get-algorithms asked %d times after charon answered", f.algorithms)
	}
}
