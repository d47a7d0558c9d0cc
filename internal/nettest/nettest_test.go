package nettest

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestHTTPGet: a server listening on 127.0.0.1 inside a namespace is
// reached by HTTPGet, and only from inside it.
func TestHTTPGet(t *testing.T) {
	ns := NewNS(t, "http")
	var l net.Listener
	if err := ns.Do(func() error {
		var err error
		l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("from the namespace")) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	addr := l.Addr().String()
	ctx := context.Background()
	body, err := ns.HTTPGet(ctx, addr, "/hello")
	if err != nil || string(body) != "from the namespace" {
		t.Fatalf("HTTPGet = %q, %v", body, err)
	}
	if _, err := ns.HTTPGet(ctx, addr, "/missing"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a 404 gave %v", err)
	}
	// The same address outside the namespace is not this server.
	if resp, err := http.Get("http://" + addr + "/hello"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("the namespace's server answered outside it")
		}
	}
}
