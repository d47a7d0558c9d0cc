package nettest

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Capture is tcpdump running on one link of a namespace; it is shared by the
// end-to-end tests and the demo, which both show what crosses the wire.
type Capture struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once tcpdump has exited and lines is final
	lines  []string
}

// StartCapture runs tcpdump on link in ns, not promiscuous (so it sees only
// the frames addressed to that node), with numeric, line-buffered output and
// args (options such as -c, then the filter) after those. It returns once
// tcpdump says the capture is open, so that nothing sent afterwards is
// missed.
func StartCapture(ns *NS, link string, args ...string) (*Capture, error) {
	cmd := ns.Command("tcpdump", append([]string{"-p", "-n", "-l", "-i", link}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("tcpdump in %s: %w", ns.Name, err)
	}
	c := &Capture{cmd: cmd, exited: make(chan struct{})}
	ready := make(chan struct{})
	var listening bool
	var diag strings.Builder
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			// tcpdump says "listening on" once the capture is open.
			if !listening && strings.Contains(sc.Text(), "listening on") {
				listening = true
				close(ready)
			}
			diag.WriteString(sc.Text() + "\n")
		}
	}()
	go func() {
		b, _ := io.ReadAll(stdout)
		<-stderrDone // Wait closes the pipes: read them to the end first
		cmd.Wait()
		for _, l := range strings.Split(string(b), "\n") {
			if l != "" {
				c.lines = append(c.lines, l)
			}
		}
		close(c.exited)
	}()
	select {
	case <-ready:
		return c, nil
	case <-c.exited:
		if listening { // opened, then ended by itself (-c) at once
			return c, nil
		}
		return nil, fmt.Errorf("tcpdump on %s in %s exited (%v): %s", link, ns.Name, cmd.ProcessState, diag.String())
	case <-time.After(10 * time.Second):
		c.Stop(0)
		return nil, fmt.Errorf("tcpdump on %s in %s did not start within 10 s", link, ns.Name)
	}
}

// Stop waits up to grace for tcpdump to end by itself (as it does after -c
// packets), then interrupts it, so that it prints what it has and exits, and
// kills it if it does not within 5 s. It returns the lines tcpdump printed.
// Stopping a stopped capture only returns them again.
func (c *Capture) Stop(grace time.Duration) []string {
	select {
	case <-c.exited:
		return c.lines
	case <-time.After(grace):
	}
	c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
	case <-time.After(5 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
	return c.lines
}
