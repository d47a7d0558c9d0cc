package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/mpsa/mpsa/api"
	"github.com/mpsa/mpsa/swanctl"
)

// groupFlusher removes a group's kernel objects (killswitch.FlushGroup);
// a parameter so that tests can run the command without touching the
// host.
type groupFlusher func(ctx context.Context, name string) (int, error)

// runFlush removes a group's kill switch and every other kernel object
// with its marks, unless a running mpsad serves the group.
func runFlush(args []string, stdout, stderr io.Writer, flush groupFlusher) int {
	const help = "flush GROUP [--socket PATH]"
	fs := newFlagSet("flush", help, stderr)
	socket := fs.String("socket", swanctl.DefaultStatusSocket, "path of mpsad's status socket")
	pos, code, ok := parseArgs(fs, args, stdout)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "usage: mpsactl %s\n", help)
		return 2
	}
	group := pos[0]
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := refuseIfServed(ctx, *socket, group); err != nil {
		fmt.Fprintf(stderr, "mpsactl flush: %v\n", err)
		return 1
	}
	n, err := flush(ctx, group)
	if err != nil {
		fmt.Fprintf(stderr, "mpsactl flush: group %s: removed %d objects, but: %v\n", group, n, err)
		return 1
	}
	if n == 0 {
		fmt.Fprintf(stdout, "group %s: no kernel objects of this group\n", group)
		return 0
	}
	fmt.Fprintf(stdout, "group %s: removed %d kernel objects (kill switch, SAs, XFRM interface); traffic between its prefixes now follows the routing table unprotected\n", group, n)
	return 0
}

// refuseIfServed returns an error if the mpsad at socket serves group, or
// if it cannot tell. No socket, or nobody listening on it, means no mpsad
// runs.
func refuseIfServed(ctx context.Context, socket, group string) error {
	st, err := api.NewClient(socket).Status(ctx)
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot tell whether a running mpsad serves group %s (%v); stop mpsad first, or pass its --socket", group, err)
	}
	for _, g := range st.Groups {
		if g.Name == group {
			return fmt.Errorf("group %s is served by the running mpsad (%s); remove it from the configuration and reload mpsad (systemctl reload mpsad), which removes its kill switch", group, socket)
		}
	}
	return nil
}
