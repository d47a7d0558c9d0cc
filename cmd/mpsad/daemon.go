package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/mpsa/mpsa/internal/metrics"
	"github.com/mpsa/mpsa/internal/version"
	"github.com/mpsa/mpsa/server"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/xfrm/esp"
)

// runDaemon runs mpsad until SIGTERM or SIGINT. SIGHUP reloads the
// configuration. Under systemd (Type=notify) it reports READY=1 once the
// control port and status socket are open and charon answered over VICI,
// RELOADING=1/READY=1 around a reload, STOPPING=1 as soon as the stop
// signal arrives (before removing what it installed, which may take a
// while), and sends watchdog keep-alives from its main loop when
// WatchdogSec is set. sdnotify_test.go checks this against a real charon.
func runDaemon(configPath string, stderr io.Writer) int {
	level := new(slog.LevelVar)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg, err := loadConfig(configPath, level, log)
	if err != nil {
		fmt.Fprintf(stderr, "mpsad: %s has errors:\n%v\n", configPath, err)
		// EX_CONFIG: the unit's RestartPreventExitStatus stops a restart
		// loop on a broken configuration.
		return exitConfig
	}
	m, err := metrics.New(metrics.Options{Version: version.Version, Commit: version.Commit})
	if err != nil {
		fmt.Fprintf(stderr, "mpsad: metrics: %v\n", err)
		return 1
	}
	planes := dataPlanes{stateDir: stateDir(os.Getenv("STATE_DIRECTORY")), hardwareAES: esp.HardwareAES()}
	opts := server.Options{Config: cfg, Logger: log, NewDataPlane: planes.new, FlushDataPlane: flushDataPlane, Metrics: m}
	if interval, err := daemon.SdWatchdogEnabled(false); err == nil && interval > 0 {
		opts.Watchdog = func() { daemon.SdNotify(false, daemon.SdNotifyWatchdog) }
		opts.WatchdogInterval = interval / 2
	}
	srv, err := server.New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "mpsad: %v\n", err)
		return exitConfig
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	log.Info("mpsad starting", "version", version.Version, "commit", version.Commit, "role", cfg.Role, "config", configPath, "groups", len(cfg.Groups))
	daemon.SdNotify(false, "STATUS=waiting for charon's VICI socket "+cfg.VICI)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	readyAt, stopSignal := srv.Ready(), ctx.Done()
	stopping := false
	for {
		select {
		case <-stopSignal:
			// srv.Run sees the same ctx and is now cleaning up.
			stopSignal, stopping = nil, true
			daemon.SdNotify(false, daemon.SdNotifyStopping+"\nSTATUS=stopping: removing the SAs, policies and devices mpsad installed")
			log.Info("stopping: removing what mpsad installed")
		case err := <-done:
			if !stopping {
				// The server ended on its own (an error).
				daemon.SdNotify(false, daemon.SdNotifyStopping)
			}
			if err != nil {
				log.Error("mpsad stopped", "err", err)
				return 1
			}
			log.Info("mpsad stopped")
			return exitOK
		case <-readyAt:
			readyAt = nil
			if stopping {
				continue
			}
			daemon.SdNotify(false, daemon.SdNotifyReady+"\nSTATUS="+statusLine(cfg))
			log.Info("ready: connected to charon")
		case <-hup:
			if stopping {
				continue // no READY=1 after STOPPING=1
			}
			daemon.SdNotify(false, daemon.SdNotifyReloading)
			reload(ctx, srv, configPath, level, log)
			daemon.SdNotify(false, daemon.SdNotifyReady)
		}
	}
}

// loadConfig loads the configuration at path. When it is valid, it sets
// level to the configured log level and logs the configuration's warnings.
func loadConfig(path string, level *slog.LevelVar, log *slog.Logger) (*swanctl.Config, error) {
	cfg, err := swanctl.LoadMPSA(path)
	if err != nil {
		return nil, err
	}
	level.Set(cfg.SlogLevel())
	for _, w := range cfg.Warnings {
		log.Warn("configuration", "warning", w.Error())
	}
	return cfg, nil
}

// reload loads the configuration at path again and applies it. The log
// level changes only when the server accepts the new configuration.
func reload(ctx context.Context, srv *server.Server, path string, level *slog.LevelVar, log *slog.Logger) {
	running := level.Level()
	cfg, err := loadConfig(path, level, log)
	if err != nil {
		log.Error("reload: configuration has errors; keeping the running one", "file", path, "errors", err.Error())
		return
	}
	if err := srv.Reload(ctx, cfg); err != nil {
		level.Set(running)
		log.Error("reload", "err", err)
		return
	}
	log.Info("reloaded configuration", "file", path, "groups", len(cfg.Groups))
}

// statusLine is the STATUS= that systemctl status shows.
func statusLine(cfg *swanctl.Config) string {
	return fmt.Sprintf("%s of %d group(s), connected to charon", cfg.Role, len(cfg.Groups))
}
