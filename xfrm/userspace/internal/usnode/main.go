// Command usnode runs the userspace ESP data plane alone, with a static SA
// and peer table, in the network namespace it is started in. It serves
// scripts/bench.sh and manual experiments; mpsad is the real user of the
// backend.
//
//	usnode -local 192.0.2.1 -keyfile k -spi 0x1000 -suite aes256-sha256 \
//	    -lan 10.1.0.0/24 -peer 10.2.0.0/24=192.0.2.2
//
// The key file holds two hex strings separated by white space: the
// encryption key and the integrity key. usnode runs until SIGINT or
// SIGTERM and then prints the counters on standard error.
package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/userspace"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "usnode:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		locals, lans, peers listFlag
		tunName             = flag.String("tun", userspace.DefaultTUNName, "TUN device name")
		mtu                 = flag.Int("mtu", userspace.DefaultMTU, "TUN MTU")
		spiFlag             = flag.String("spi", "0x1000", "SPI of the shared SA")
		suiteFlag           = flag.String("suite", "aes256-sha256", "ESP proposal (strongSwan keywords)")
		keyFile             = flag.String("keyfile", "", "file with the hex encryption and integrity keys")
		verbose             = flag.Bool("v", false, "debug logging")
		cpuProfile          = flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
		udpPort             = flag.Uint("udp-port", 0, "carry ESP in UDP on this port (0: raw ESP)")
	)
	flag.Var(&locals, "local", "local underlay address (repeatable)")
	flag.Var(&lans, "lan", "local prefix (repeatable)")
	flag.Var(&peers, "peer", "peer as PREFIX=UNDERLAY (repeatable)")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	suite, err := mpsa.ParseProposal(*suiteFlag)
	if err != nil {
		return err
	}
	spi, err := strconv.ParseUint(*spiFlag, 0, 32)
	if err != nil {
		return fmt.Errorf("-spi: %w", err)
	}
	raw, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("-keyfile: %w", err)
	}
	fields := strings.Fields(string(raw))
	if len(fields) != 2 {
		return fmt.Errorf("-keyfile %s: want two hex keys", *keyFile)
	}
	sa := xfrm.SA{SPI: uint32(spi), Suite: suite}
	if sa.EncrKey, err = hex.DecodeString(fields[0]); err != nil {
		return fmt.Errorf("-keyfile %s: encryption key: %w", *keyFile, err)
	}
	if sa.IntegKey, err = hex.DecodeString(fields[1]); err != nil {
		return fmt.Errorf("-keyfile %s: integrity key: %w", *keyFile, err)
	}
	defer sa.Zero()
	if *udpPort > 65535 {
		return fmt.Errorf("-udp-port %d: not a port", *udpPort)
	}
	cfg := userspace.Config{TUNName: *tunName, MTU: *mtu, Logger: log, ESPInUDPPort: uint16(*udpPort)}
	for _, s := range locals {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("-local: %w", err)
		}
		cfg.Local = append(cfg.Local, a)
	}
	var local []netip.Prefix
	for _, s := range lans {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("-lan: %w", err)
		}
		local = append(local, p)
	}
	var table []xfrm.Peer
	for _, s := range peers {
		pfx, under, ok := strings.Cut(s, "=")
		if !ok {
			return fmt.Errorf("-peer %q: want PREFIX=UNDERLAY", s)
		}
		p, err := netip.ParsePrefix(pfx)
		if err != nil {
			return fmt.Errorf("-peer: %w", err)
		}
		u, err := netip.ParseAddr(under)
		if err != nil {
			return fmt.Errorf("-peer: %w", err)
		}
		table = append(table, xfrm.Peer{Prefix: p, Underlay: u})
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// The backend outlives the signal so that its counters can be read.
	be, err := userspace.New(context.Background(), cfg)
	if err != nil {
		return err
	}
	defer be.Close()
	if err := be.InstallInbound(ctx, sa); err != nil {
		return err
	}
	if err := be.SetOutbound(ctx, sa.SPI); err != nil {
		return err
	}
	if err := be.SetPeers(ctx, local, table); err != nil {
		return err
	}
	log.Info("ready", "tun", be.Name())
	<-ctx.Done()
	cs, _ := be.Counters(context.Background())
	for _, c := range cs {
		fmt.Fprintf(os.Stderr, "spi %08x in %d pkts %d bytes (%d errors), out %d pkts %d bytes (%d errors)\n",
			c.SPI, c.InPackets, c.InBytes, c.InErrors, c.OutPackets, c.OutBytes, c.OutErrors)
	}
	fmt.Fprintf(os.Stderr, "drops %+v\n", be.Drops())
	return be.Close()
}
