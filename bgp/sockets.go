package bgp

import (
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// shutdownSessions shuts down, at the socket level, every TCP connection
// of this process whose local port is port and whose remote address
// passes peer, and returns how many.
//
// It is how the reflector ends its sessions when mpsad stops or restarts.
// GoBGP's StopBgp deletes the neighbours one after the other, and each
// deletion withdraws that neighbour's routes from the neighbours still
// connected: a clean stop would tell every member to drop every other
// member's routes, and their traffic would stop until the controller is
// back. Shutting the sockets down first makes every session fail at once,
// as a crash does: GoBGP sees a read error on each (graceful restart, no
// withdrawal), the members see the connection closed and keep the routes,
// and anything GoBGP still tries to send fails.
//
// shutdown(2) neither closes nor frees the descriptor; GoBGP closes it as
// usual. The descriptors are looked up in /proc/self/fd, each checked with
// getsockname and getpeername right before the shutdown.
func shutdownSessions(port uint16, peer func(netip.Addr) bool) int {
	return shutdownSockets(port, peer, false)
}

// shutdownSockets is shutdownSessions that also shuts down, when
// listeners is set, the listening sockets on port: accept fails on them
// (GoBGP's accept loop ends) and the port is free at once for a new
// listener, before GoBGP closes them.
func shutdownSockets(port uint16, peer func(netip.Addr) bool, listeners bool) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
			continue
		}
		local, err := unix.Getsockname(fd)
		if err != nil || sockPort(local) != port {
			continue
		}
		remote, err := unix.Getpeername(fd)
		if err != nil {
			// A listener (or a socket not connected yet).
			if listeners {
				if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && acc == 1 {
					_ = unix.Shutdown(fd, unix.SHUT_RDWR)
				}
			}
			continue
		}
		if a, ok := sockAddr(remote); !ok || !peer(a) {
			continue
		}
		if unix.Shutdown(fd, unix.SHUT_RDWR) == nil {
			n++
		}
	}
	return n
}

func sockPort(sa unix.Sockaddr) uint16 {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return uint16(sa.Port)
	case *unix.SockaddrInet6:
		return uint16(sa.Port)
	}
	return 0
}

func sockAddr(sa unix.Sockaddr) (netip.Addr, bool) {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(sa.Addr), true
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(sa.Addr).Unmap(), true
	}
	return netip.Addr{}, false
}
