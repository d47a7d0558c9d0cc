package vici

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	govici "github.com/strongswan/govici/vici"

	"github.com/mpsa/mpsa/internal/paths"
)

// DefaultSocket is charon's default VICI socket: the path of the build's
// default VICI URI (internal/paths; Debian's /var/run/charon.vici unless
// the binary was linked with another distribution's).
func DefaultSocket() string { return paths.Current().SocketPath() }

// Client is one VICI session with charon. Its methods may be called from
// several goroutines; calls are serialised.
type Client struct {
	mu      sync.Mutex // serialises commands
	s       *govici.Session
	gc      *gateConn
	listSub bool // subscribed to list-sa
}

// Dial opens one VICI session on the unix socket path (DefaultSocket if
// empty). ctx bounds the connection attempt.
func Dial(ctx context.Context, socket string) (*Client, error) {
	if socket == "" {
		socket = DefaultSocket()
	}
	var d net.Dialer
	return newClient(socket, func(network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	})
}

// newClient opens a session over the connection dial returns.
func newClient(socket string, dial func(network, addr string) (net.Conn, error)) (*Client, error) {
	var gc *gateConn
	s, err := govici.NewSession(
		govici.WithSocketPath(socket),
		// govici dials with context.Background(); dial binds the
		// attempt to the caller's context.
		govici.WithDialContext(func(_ context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(network, addr)
			if err != nil {
				return nil, err
			}
			gc = newGateConn(c)
			return gc, nil
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("vici: connect %s: %w", socket, err)
	}
	return &Client{s: s, gc: gc}, nil
}

// Backoff is an exponential backoff between connection attempts.
type Backoff struct {
	// Min is the first delay (100 ms if zero).
	Min time.Duration
	// Max caps the delay (5 s if zero).
	Max time.Duration
}

func (b Backoff) withDefaults() Backoff {
	if b.Min <= 0 {
		b.Min = 100 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 5 * time.Second
	}
	if b.Max < b.Min {
		b.Max = b.Min
	}
	return b
}

// next doubles d within [Min, Max].
func (b Backoff) next(d time.Duration) time.Duration {
	if d < b.Min {
		return b.Min
	}
	d *= 2
	if d > b.Max {
		d = b.Max
	}
	return d
}

// jitter spreads d by up to ±20 % so that several daemons restarting
// together do not retry in step.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}

// DialRetry dials until a session is open and answers a version query, or
// ctx is done, waiting between attempts with exponential backoff. Failures
// are logged at debug level except the first, logged at info.
func DialRetry(ctx context.Context, socket string, b Backoff, log *slog.Logger) (*Client, error) {
	b = b.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	var delay time.Duration
	for attempt := 1; ; attempt++ {
		c, err := Dial(ctx, socket)
		if err == nil {
			vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err = c.Version(vctx)
			cancel()
			if err == nil {
				return c, nil
			}
			c.Close()
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("vici: connect %s: %w (last error: %v)", socket, ctx.Err(), err)
		}
		delay = b.next(delay)
		lvl := slog.LevelDebug
		if attempt == 1 {
			lvl = slog.LevelInfo
		}
		log.Log(ctx, lvl, "charon not reachable over VICI, retrying", "socket", socket, "attempt", attempt, "retry_in", delay, "err", err)
		t := time.NewTimer(jitter(delay))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("vici: connect %s: %w (last error: %v)", socket, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// Close ends the session.
func (c *Client) Close() error { return c.s.Close() }

// Subscribe registers the session for the named events; receive them with
// NotifyEvents. Events that arrive while the registration is in progress
// are held back and delivered after it, in order.
func (c *Client) Subscribe(events ...string) error {
	c.gc.hold()
	defer c.gc.release()
	if err := c.s.Subscribe(events...); err != nil {
		return fmt.Errorf("vici: subscribe %v: %w", events, err)
	}
	return nil
}

// NotifyEvents has govici write every subscribed event to ch; it drops
// events when ch is full and closes ch when the session ends.
func (c *Client) NotifyEvents(ch chan<- govici.Event) { c.s.NotifyEvents(ch) }

// StopEvents stops writing events to ch.
func (c *Client) StopEvents(ch chan<- govici.Event) { c.s.StopEvents(ch) }

// Version is charon's answer to the version command.
type Version struct {
	Daemon, Version, Sysname, Release, Machine string
}

// Version queries the daemon's version; it doubles as a liveness check.
func (c *Client) Version(ctx context.Context) (Version, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, err := c.s.Call(ctx, "version", nil)
	if err != nil {
		return Version{}, fmt.Errorf("vici: version: %w", err)
	}
	get := func(k string) string { s, _ := m.Get(k).(string); return s }
	return Version{Daemon: get("daemon"), Version: get("version"), Sysname: get("sysname"),
		Release: get("release"), Machine: get("machine")}, nil
}

// ListSAsRaw runs list-sas and returns the raw list-sa messages, one per
// IKE SA.
//
// It does not use govici's CallStreaming, whose reader picks the command
// response and the streamed events in random order (so a listing can end
// early and leave events behind that break the next command). Instead the
// session subscribes to list-sa like to any event: govici's reader hands
// every list-sa event to the channel before it reads the response, so all
// of them are in the channel when Call returns. The channel is sized from
// charon's IKE SA count (stats); a listing shorter than that count is
// repeated, and after three short ones ListSAsRaw fails rather than
// return a partial list.
func (c *Client) ListSAsRaw(ctx context.Context) ([]*govici.Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.listSub {
		if err := c.Subscribe("list-sa"); err != nil {
			return nil, err
		}
		c.listSub = true
	}
	total, err := c.ikeSATotal(ctx)
	if err != nil {
		return nil, err
	}
	var out []*govici.Message
	for try := 1; ; try++ {
		ch := make(chan govici.Event, 2*total+64)
		c.s.NotifyEvents(ch)
		lctx, cancel := context.WithTimeout(ctx, listTimeout(total))
		_, err = c.s.Call(lctx, "list-sas", nil)
		cancel()
		c.s.StopEvents(ch)
		if err != nil {
			return nil, fmt.Errorf("vici: list-sas: %w", err)
		}
		out = out[:0]
	drain:
		for {
			select {
			case ev, ok := <-ch:
				if !ok {
					break drain // session closed; the count check below decides
				}
				if ev.Name == "list-sa" {
					out = append(out, ev.Message)
				}
			default:
				break drain
			}
		}
		if len(out) >= total {
			break
		}
		// Short: an IKE SA went away meanwhile, or messages were lost.
		// The count taken now also sizes the next try.
		if total, err = c.ikeSATotal(ctx); err != nil {
			return nil, err
		}
		if len(out) >= total {
			break
		}
		if try == 3 {
			return nil, fmt.Errorf("vici: list-sas returned %d IKE SAs, charon counts %d (three tries)", len(out), total)
		}
	}
	return out, nil
}

// listTimeout is how long one list-sas of total IKE SAs may take: 30 s,
// and 20 ms more per IKE SA. A fixed bound does not fit every fleet: with
// 10,000 IKE SAs on a busy 2-core controller charon took longer than 30 s,
// and a watcher that gave up at 30 s reconnected and listed again, for
// ever (the scale harness at N = 10,000).
func listTimeout(total int) time.Duration {
	return 30*time.Second + time.Duration(total)*20*time.Millisecond
}

// ListSAs runs list-sas and returns every IKE SA with its CHILD SAs,
// ordered by unique id.
func (c *Client) ListSAs(ctx context.Context) ([]IKESA, error) {
	msgs, err := c.ListSAsRaw(ctx)
	if err != nil {
		return nil, err
	}
	sas := make([]IKESA, 0, len(msgs))
	for _, m := range msgs {
		sa, err := ParseSA(m)
		if err != nil {
			return nil, err
		}
		sas = append(sas, sa)
	}
	sortIKE(sas)
	return sas, nil
}

// ikeSATotal is charon's count of IKE SAs (stats: ikesas.total). The
// caller holds c.mu.
func (c *Client) ikeSATotal(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := c.s.Call(ctx, "stats", nil)
	if err != nil {
		return 0, fmt.Errorf("vici: stats: %w", err)
	}
	sec, ok := m.Get("ikesas").(*govici.Message)
	if !ok {
		return 0, errors.New("vici: stats: no ikesas section")
	}
	s, _ := sec.Get("total").(string)
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("vici: stats: ikesas total %q: %w", s, err)
	}
	return n, nil
}

func sortIKE(sas []IKESA) {
	slices.SortFunc(sas, func(a, b IKESA) int { return cmp.Compare(a.UniqueID, b.UniqueID) })
}
