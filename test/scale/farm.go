package scale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mpsa/mpsa/server"
	"github.com/mpsa/mpsa/swanctl"
)

// FarmOptions configure the load generator.
type FarmOptions struct {
	// Config is the swanctl.conf whose mpsa section has the member role
	// and one group per farm connection.
	Config string
	// RecordSocket is the unix socket where GET /record serves the
	// Recorder's Record as JSON, and GET /wait?spi=0xHEX&n=COUNT answers
	// once COUNT groups have installed the SA.
	RecordSocket string
	// Logger; its level is set from the configuration's log_level.
	Logger func(level slog.Level) *slog.Logger
}

// RunFarm is the load generator: mpsad's own engine (server.Server) in the
// member role, with every group of the configuration on one control port,
// and the Recorder as the data plane of each. It speaks the member side of
// the control exchange for all the farm's control addresses with the
// project's protocol code. It runs until ctx is done.
func RunFarm(ctx context.Context, o FarmOptions) error {
	cfg, err := swanctl.LoadMPSA(o.Config)
	if err != nil {
		return fmt.Errorf("load generator: %s: %w", o.Config, err)
	}
	if cfg.Role != swanctl.RoleMember {
		return fmt.Errorf("load generator: %s: role is %s, want member", o.Config, cfg.Role)
	}
	log := slog.Default()
	if o.Logger != nil {
		log = o.Logger(cfg.SlogLevel())
	}
	rec := NewRecorder(time.Now)
	srv, err := server.New(server.Options{Config: cfg, NewDataPlane: rec.NewDataPlane, Logger: log})
	if err != nil {
		return fmt.Errorf("load generator: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if fi, err := os.Lstat(o.RecordSocket); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(o.RecordSocket)
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "unix", o.RecordSocket)
	if err != nil {
		return fmt.Errorf("load generator: record socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /record", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(rec.Snapshot())
	})
	mux.HandleFunc("GET /wait", func(w http.ResponseWriter, req *http.Request) {
		spi, err := strconv.ParseUint(strings.TrimPrefix(req.FormValue("spi"), "0x"), 16, 32)
		n, nerr := strconv.Atoi(req.FormValue("n"))
		if err != nil || nerr != nil || spi == 0 || n < 1 {
			http.Error(w, "want spi=0xHEX&n=COUNT", http.StatusBadRequest)
			return
		}
		got, last, err := rec.WaitInstalled(req.Context(), uint32(spi), n)
		if err != nil {
			return // the client went away
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(installedReply{Installed: got, Last: last})
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(l) }()
	log.Info("load generator running", "groups", len(cfg.Groups), "record", o.RecordSocket)
	runErr := srv.Run(ctx)
	hs.Close()
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) && runErr == nil {
		runErr = err
	}
	os.Remove(o.RecordSocket)
	return runErr
}

// installedReply answers GET /wait: how many groups installed the SA, and
// when the last of them did.
type installedReply struct {
	Installed int       `json:"installed"`
	Last      time.Time `json:"last"`
}

// farmClient is an HTTP client of the load generator's record socket.
func farmClient(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
}

// waitInstalled asks the load generator to answer once n groups have
// installed spi ("0x%08x"), and returns when the last of them did. It
// costs the load generator's engine nothing: the recorder answers.
func waitInstalled(ctx context.Context, socket, spi string, n int) (time.Time, error) {
	hc := farmClient(socket)
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://farm/wait?spi=%s&n=%d", spi, n), nil)
	if err != nil {
		return time.Time{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return time.Time{}, fmt.Errorf("waiting for %d members to install %s: %w", n, spi, err)
	}
	defer resp.Body.Close()
	var r installedReply
	if resp.StatusCode != http.StatusOK {
		return time.Time{}, fmt.Errorf("waiting for %d members to install %s: %s", n, spi, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return time.Time{}, fmt.Errorf("waiting for %d members to install %s: %w", n, spi, err)
	}
	return r.Last, nil
}

// fetchRecord gets the load generator's Record from its socket.
func fetchRecord(ctx context.Context, socket string) (Record, error) {
	hc := farmClient(socket)
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://farm/record", nil)
	if err != nil {
		return Record{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Record{}, fmt.Errorf("load generator's record: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Record{}, fmt.Errorf("load generator's record: %s", resp.Status)
	}
	var rec Record
	if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil {
		return Record{}, fmt.Errorf("load generator's record: %w", err)
	}
	return rec, nil
}
