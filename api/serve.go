package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// Serve serves impl over HTTP on a Unix socket at path until ctx is
// done: GET /status, POST /groups/NAME/rekey, and GET /groups/NAME/routes
// when impl is a RoutesAPI. The socket is created mode
// 0660 (root and the group of its directory) and removed on return. If up
// is not nil, it receives nil once the socket listens, or the error that
// kept it from listening.
func Serve(ctx context.Context, path string, impl API, up chan<- error) error {
	signal := func(err error) error {
		if up != nil {
			up <- err
		}
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return signal(fmt.Errorf("status socket directory: %w", err))
	}
	// A socket left by a crashed run would make Listen fail.
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return signal(fmt.Errorf("status socket %s: %w", path, err))
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return signal(fmt.Errorf("status socket %s: %w", path, err))
	}
	signal(nil)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		st, err := impl.Status(r.Context())
		reply(w, st, err)
	})
	mux.HandleFunc("POST /groups/{name}/rekey", func(w http.ResponseWriter, r *http.Request) {
		spi, err := impl.Rekey(r.Context(), r.PathValue("name"))
		reply(w, map[string]string{"group": r.PathValue("name"), "spi": spi}, err)
	})
	if ra, ok := impl.(RoutesAPI); ok {
		mux.HandleFunc("GET /groups/{name}/routes", func(w http.ResponseWriter, r *http.Request) {
			rs, err := ra.Routes(r.Context(), r.PathValue("name"))
			reply(w, rs, err)
		})
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	err = srv.Serve(l)
	os.Remove(path)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, ErrNoGroup) {
			code = http.StatusNotFound
		}
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	json.NewEncoder(w).Encode(v)
}
