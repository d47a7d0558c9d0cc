package scale

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/testenv"
)

// userHZ is the unit of the CPU times in /proc/PID/stat: USER_HZ, 100 on
// every Linux ABI.
const userHZ = 100

// Usage is the CPU time and peak resident memory of a process.
type Usage struct {
	// CPU is user plus system time.
	CPU time.Duration
	// PeakRSS is the peak resident set size in bytes (VmHWM).
	PeakRSS uint64
}

// add sums CPU and keeps the larger peak.
func (u Usage) add(o Usage) Usage {
	return Usage{CPU: u.CPU + o.CPU, PeakRSS: max(u.PeakRSS, o.PeakRSS)}
}

// procUsage reads the usage of a running process from /proc.
func procUsage(pid int) (Usage, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Usage{}, err
	}
	cpu, err := parseStatCPU(string(stat))
	if err != nil {
		return Usage{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Usage{}, err
	}
	rss, err := parseStatusKiB(string(status), "VmHWM")
	if err != nil {
		return Usage{}, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return Usage{CPU: cpu, PeakRSS: rss * 1024}, nil
}

// parseStatCPU returns utime+stime of a /proc/PID/stat line. The command
// name, in parentheses, may hold spaces: fields are counted after its
// closing parenthesis, where field 3 (state) starts.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	f := strings.Fields(stat[i+1:])
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return 0, fmt.Errorf("%d fields after the command name", len(f))
	}
	var ticks uint64
	for _, k := range []int{utime, stime} {
		v, err := strconv.ParseUint(f[k], 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// parseStatusKiB returns the value in kiB of key in /proc/PID/status.
func parseStatusKiB(status, key string) (uint64, error) {
	for _, l := range strings.Split(status, "\n") {
		rest, ok := strings.CutPrefix(l, key+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%s: %q", key, l)
		}
		return strconv.ParseUint(f[0], 10, 64)
	}
	return 0, fmt.Errorf("no %s", key)
}

// proc is a process the harness started inside a namespace; it is stopped
// by its PID (ip netns exec executes the program in its own place, so the
// PID is the program's).
type proc struct {
	name string
	cmd  *exec.Cmd
	done <-chan struct{}
	log  string // stdout and stderr
}

// startProc starts argv in ns with its output in logPath. The process has
// its own process group and gets SIGTERM if the harness dies first.
func startProc(ns *nettest.NS, name, logPath string, argv ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := ns.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	done, err := testenv.StartTied(cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return &proc{name: name, cmd: cmd, done: done, log: logPath}, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// running reports whether the process has not exited.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, waits up to grace, then kills. It returns the
// process's usage from wait4 (exact to its end), and an error if it had
// to be killed. Stopping a stopped process returns its usage again.
func (p *proc) stop(grace time.Duration) (Usage, error) {
	var err error
	if p.running() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			p.cmd.Process.Kill()
			<-p.done
			err = fmt.Errorf("%s (pid %d) ignored SIGTERM for %v; killed", p.name, p.pid(), grace)
		}
	}
	ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return Usage{}, errors.Join(err, fmt.Errorf("%s: no rusage", p.name))
	}
	u := Usage{
		CPU:     time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		PeakRSS: uint64(ru.Maxrss) * 1024, // kiB on Linux
	}
	return u, err
}

// usage is the usage of the process so far: from /proc while it runs,
// from wait4 once it has ended.
func (p *proc) usage() (Usage, error) {
	if p.running() {
		if u, err := procUsage(p.pid()); err == nil || p.running() {
			return u, err
		}
	}
	return p.stop(0)
}

// tail returns the last n lines of the process's output.
func (p *proc) tail(n int) string { return tailFile(p.log, n) }

// tailFile returns the last n lines of a file, or why it cannot.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
