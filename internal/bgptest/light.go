package bgptest

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// LightClient is a simulated member speaker for measuring a route
// reflector at scale: one TCP connection that sends an OPEN (IPv4
// unicast, graceful restart), its prefixes with one next hop and an
// End-of-RIB, answers keepalives, and counts the prefixes it receives.
// BGP's messages are GoBGP's packet codec; nothing else of GoBGP runs, so
// that thousands of them fit in one process (a GoBGP instance per member
// would keep the whole table each). When the session ends it connects
// again after a second, sends its routes again and counts from zero,
// until Stop.
type LightClient struct {
	// ASN is the group's AS; Addr the client's control address, also its
	// router ID; NextHop the underlay its Prefixes are advertised with.
	ASN      uint32
	Addr     netip.Addr
	NextHop  netip.Addr
	Prefixes []netip.Prefix
	// Dial opens the TCP connection to the reflector (in the client's
	// network namespace, from Addr).
	Dial func(ctx context.Context) (net.Conn, error)

	lastErr  atomic.Value // string
	got      atomic.Int64
	eor      atomic.Bool
	sessions atomic.Int64
	mu       sync.Mutex
	conn     net.Conn
	cancel   context.CancelFunc
	done     chan struct{}
}

// Got is how many prefixes the reflector announced to the client in its
// current session.
func (c *LightClient) Got() int64 { return c.got.Load() }

// EoR reports whether the current session has seen the IPv4 End-of-RIB.
func (c *LightClient) EoR() bool { return c.eor.Load() }

// Sessions counts the sessions established so far.
func (c *LightClient) Sessions() int64 { return c.sessions.Load() }

// Start runs the client until Stop or ctx is done. up, if not nil, is
// closed once the first session is established and its routes sent
// (connections the reflector refuses are tried again every second).
func (c *LightClient) Start(ctx context.Context, up chan<- struct{}) {
	ctx, c.cancel = context.WithCancel(ctx)
	c.done = make(chan struct{})
	go func() {
		defer close(c.done)
		first := true
		for ctx.Err() == nil {
			err := c.session(ctx, func() {
				if first && up != nil {
					close(up)
				}
				first = false
			})
			c.lastErr.Store(fmt.Sprint(err))
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
}

// LastError says how the last session ended.
func (c *LightClient) LastError() string {
	s, _ := c.lastErr.Load().(string)
	return s
}

// Stop ends the client and waits for it.
func (c *LightClient) Stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	c.mu.Lock()
	if c.conn != nil {
		c.conn.Close()
	}
	c.mu.Unlock()
	<-c.done
}

func (c *LightClient) write(conn net.Conn, m *bgppkt.BGPMessage) error {
	b, err := m.Serialize()
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err = conn.Write(b)
	return err
}

// session runs one session: connect, OPEN, routes, End-of-RIB, then
// count until the connection ends. established runs once the routes are
// sent.
func (c *LightClient) session(ctx context.Context, established func()) error {
	conn, err := c.Dial(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c.got.Store(0)
	c.eor.Store(false)
	caps := []bgppkt.ParameterCapabilityInterface{
		bgppkt.NewCapMultiProtocol(bgppkt.RF_IPv4_UC),
		bgppkt.NewCapFourOctetASNumber(c.ASN),
		bgppkt.NewCapGracefulRestart(false, false, 120, []*bgppkt.CapGracefulRestartTuple{bgppkt.NewCapGracefulRestartTuple(bgppkt.RF_IPv4_UC, true)}),
	}
	myAS := uint16(bgppkt.AS_TRANS)
	if c.ASN <= 0xffff {
		myAS = uint16(c.ASN)
	}
	open, err := bgppkt.NewBGPOpenMessage(myAS, 90, c.Addr, []bgppkt.OptionParameterInterface{bgppkt.NewOptionParameterCapability(caps)})
	if err != nil {
		return err
	}
	if err := c.write(conn, open); err != nil {
		return err
	}
	for opened := false; !opened; {
		typ, _, err := readMsg(conn)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Addr, err)
		}
		switch typ {
		case bgppkt.BGP_MSG_OPEN:
			if err := c.write(conn, bgppkt.NewBGPKeepAliveMessage()); err != nil {
				return err
			}
		case bgppkt.BGP_MSG_KEEPALIVE:
			opened = true
		case bgppkt.BGP_MSG_NOTIFICATION:
			return fmt.Errorf("%s: notification", c.Addr)
		}
	}
	if err := c.advertise(conn); err != nil {
		return err
	}
	c.sessions.Add(1)
	established()
	// Keepalives every 30 s against the hold time of 90 s.
	ka := time.NewTicker(30 * time.Second)
	defer ka.Stop()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-ka.C:
				if c.write(conn, bgppkt.NewBGPKeepAliveMessage()) != nil {
					return
				}
			}
		}
	}()
	for {
		typ, body, err := readMsg(conn)
		if err != nil {
			return err
		}
		if typ == bgppkt.BGP_MSG_UPDATE {
			n, eor := countNLRI(body)
			c.got.Add(int64(n))
			if eor {
				c.eor.Store(true)
			}
		}
	}
}

// advertise sends the client's prefixes with its next hop, then
// End-of-RIB.
func (c *LightClient) advertise(conn net.Conn) error {
	nh, err := bgppkt.NewPathAttributeNextHop(c.NextHop)
	if err != nil {
		return err
	}
	attrs := []bgppkt.PathAttributeInterface{
		bgppkt.NewPathAttributeOrigin(0),
		bgppkt.NewPathAttributeAsPath(nil),
		nh,
		bgppkt.NewPathAttributeLocalPref(100),
	}
	var nlri []bgppkt.PathNLRI
	for _, p := range c.Prefixes {
		n, err := bgppkt.NewIPAddrPrefix(p)
		if err != nil {
			return err
		}
		nlri = append(nlri, bgppkt.PathNLRI{NLRI: n})
	}
	if err := c.write(conn, bgppkt.NewBGPUpdateMessage(nil, attrs, nlri)); err != nil {
		return err
	}
	return c.write(conn, bgppkt.NewBGPUpdateMessage(nil, nil, nil))
}

// readMsg reads one BGP message: its type and body.
func readMsg(r io.Reader) (uint8, []byte, error) {
	var h [19]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint16(h[16:18]))
	if n < 19 {
		return 0, nil, fmt.Errorf("bad length %d", n)
	}
	body := make([]byte, n-19)
	_, err := io.ReadFull(r, body)
	return h[18], body, err
}

// countNLRI returns the number of IPv4 NLRI in an UPDATE body, and
// whether it is the IPv4 End-of-RIB.
func countNLRI(body []byte) (int, bool) {
	if len(body) < 4 {
		return 0, false
	}
	wl := int(binary.BigEndian.Uint16(body))
	if 2+wl+2 > len(body) {
		return 0, false
	}
	al := int(binary.BigEndian.Uint16(body[2+wl:]))
	if 2+wl+2+al > len(body) {
		return 0, false
	}
	nlri := body[2+wl+2+al:]
	if wl == 0 && al == 0 && len(nlri) == 0 {
		return 0, true
	}
	n := 0
	for len(nlri) > 0 {
		l := (int(nlri[0]) + 7) / 8
		nlri = nlri[1+min(l, len(nlri)-1):]
		n++
	}
	return n, false
}
