// Package charon runs real strongSwan charon daemons inside network
// namespaces, one per namespace, each with its own directory, its own
// strongswan.conf, its own VICI socket and a private /run (charon's pid file
// path is compiled in). It is used by the end-to-end tests and by the demo.
//
// Instances are started with [Launch] (returns errors; for programs) or
// [Start] (fails the test; stops the daemon and removes its directory at the
// end of the test, and copies charon.log into the test log when the test
// failed).
//
// The host kernel may have no ESP: the generated strongswan.conf loads
// kernel-libipsec before kernel-netlink, so ESP runs in userspace over a TUN
// device (ipsec0) and is carried in UDP 4500.
package charon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mpsa/mpsa/internal/testenv"
)

// DefaultBinary is where Debian installs the charon daemon.
const DefaultBinary = "/usr/lib/ipsec/charon"

// plugins is the plugin load list of the generated strongswan.conf: enough
// for PSK and certificates with the usual algorithms, with kernel-libipsec
// ahead of kernel-netlink.
var plugins = []string{
	"random", "nonce", "openssl", "pem", "pkcs1", "pkcs8", "x509", "pubkey",
	"kdf", "hmac", "sha1", "sha2", "aes", "gcm", "curve25519", "gmp",
	"kernel-libipsec", "kernel-netlink", "socket-default", "vici",
}

// readyTimeout bounds the wait for the VICI socket to answer.
const readyTimeout = 20 * time.Second

// Config describes one charon instance.
type Config struct {
	// NetNS is the name of the network namespace (as in `ip netns`) to
	// run charon in. Required.
	NetNS string
	// Dir is the instance directory. It holds strongswan.conf, the VICI
	// socket, charon.log, the private /run and swanctl/. If empty, Launch
	// creates a short one under the system temporary directory (a unix
	// socket path must stay under 108 bytes) and Close removes it.
	Dir string
	// SwanctlConf is the content of swanctl/swanctl.conf, loaded with
	// `swanctl --load-all` once charon answers. Empty: nothing is loaded.
	SwanctlConf string
	// Logger receives progress messages; slog.Default() if nil.
	Logger *slog.Logger
	// OmitPlugins are left out of the plugin load list: a charon
	// without gcm and openssl, say, as Debian installs it without
	// libstrongswan-standard-plugins.
	OmitPlugins []string
	// Settings are further lines of the charon { } section of
	// strongswan.conf, such as "ikesa_table_size = 4096" for an instance
	// that holds thousands of IKE SAs.
	Settings []string
}

// Instance is a running (or stopped) charon.
type Instance struct {
	cfg     Config
	ownsDir bool
	log     *slog.Logger

	mu   sync.Mutex
	cmd  *exec.Cmd
	done <-chan struct{} // closed when cmd has been waited for
}

// Launch writes the instance directory, starts charon in the namespace,
// waits until its VICI socket answers and loads SwanctlConf. On error
// nothing is left running. Close removes what Launch made.
func Launch(ctx context.Context, cfg Config) (*Instance, error) {
	if cfg.NetNS == "" {
		return nil, errors.New("charon: Config.NetNS is required")
	}
	in := &Instance{cfg: cfg, log: cfg.Logger}
	if in.log == nil {
		in.log = slog.Default()
	}
	if in.cfg.Dir == "" {
		d, err := os.MkdirTemp("", "mpsa-charon-")
		if err != nil {
			return nil, fmt.Errorf("charon: instance directory: %w", err)
		}
		in.cfg.Dir = d
		in.ownsDir = true
	}
	in.log = in.log.With("netns", cfg.NetNS, "dir", in.cfg.Dir)
	if err := in.writeFiles(); err != nil {
		in.Close()
		return nil, err
	}
	if err := in.startAndLoad(ctx); err != nil {
		in.Close()
		return nil, err
	}
	return in, nil
}

// SocketPath is the path of the VICI unix socket.
func (in *Instance) SocketPath() string { return filepath.Join(in.cfg.Dir, "charon.vici") }

// uri is the VICI socket as swanctl's --uri wants it.
func (in *Instance) uri() string { return "unix://" + in.SocketPath() }

// SwanctlDir is the SWANCTL_DIR of the instance (holding swanctl.conf).
func (in *Instance) SwanctlDir() string { return filepath.Join(in.cfg.Dir, "swanctl") }

// Log returns charon's file log and whatever charon wrote to stdout and
// stderr so far.
func (in *Instance) Log() string {
	var b strings.Builder
	for _, name := range []string{"charon.log", "stderr.log"} {
		data, err := os.ReadFile(filepath.Join(in.cfg.Dir, name))
		if err != nil || len(data) == 0 {
			continue
		}
		fmt.Fprintf(&b, "==== %s ====\n%s", name, data)
	}
	return b.String()
}

// PID returns the process id of the running charon, or 0 when it is not
// running.
func (in *Instance) PID() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cmd == nil {
		return 0
	}
	select {
	case <-in.done:
		return 0
	default:
		return in.cmd.Process.Pid
	}
}

// strongswanConf renders the strongswan.conf of an instance directory:
// the plugins less cfg.OmitPlugins, and cfg.Settings as further lines of
// the charon section. The file log's level is 1, the level that shows IKE
// and CHILD SA setup.
func strongswanConf(dir string, cfg Config) string {
	var b strings.Builder
	b.WriteString("# generated by github.com/mpsa/mpsa/test/charon\n")
	b.WriteString("charon {\n")
	load := slices.DeleteFunc(slices.Clone(plugins), func(p string) bool { return slices.Contains(cfg.OmitPlugins, p) })
	fmt.Fprintf(&b, "  load = %s\n", strings.Join(load, " "))
	for _, l := range cfg.Settings {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	b.WriteString("  plugins {\n")
	fmt.Fprintf(&b, "    vici {\n      socket = unix://%s\n    }\n", filepath.Join(dir, "charon.vici"))
	b.WriteString("  }\n")
	b.WriteString("  filelog {\n    main {\n")
	fmt.Fprintf(&b, "      path = %s\n", filepath.Join(dir, "charon.log"))
	b.WriteString("      default = 1\n")
	b.WriteString("      time_format = %T\n      ike_name = yes\n      flush_line = yes\n")
	b.WriteString("    }\n  }\n")
	b.WriteString("  syslog {\n    daemon {\n      default = -1\n    }\n  }\n")
	b.WriteString("}\n")
	return b.String()
}

func (in *Instance) writeFiles() error {
	dir := in.cfg.Dir
	for _, d := range []string{dir, filepath.Join(dir, "run"), in.SwanctlDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("charon: %w", err)
		}
	}
	conf := strongswanConf(dir, in.cfg)
	if err := os.WriteFile(filepath.Join(dir, "strongswan.conf"), []byte(conf), 0o600); err != nil {
		return fmt.Errorf("charon: %w", err)
	}
	return in.WriteSwanctlConf(in.cfg.SwanctlConf)
}

// WriteSwanctlConf replaces swanctl/swanctl.conf; load it with
// Swanctl(ctx, "--load-all").
func (in *Instance) WriteSwanctlConf(content string) error {
	in.cfg.SwanctlConf = content
	p := filepath.Join(in.SwanctlDir(), "swanctl.conf")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		return fmt.Errorf("charon: write %s: %w", p, err)
	}
	return nil
}

// start runs charon in the namespace with /run bound to the instance's own
// run directory, and waits until the VICI socket answers.
func (in *Instance) start(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cmd != nil {
		select {
		case <-in.done:
		default:
			return errors.New("charon: already running")
		}
	}
	dir := in.cfg.Dir
	// A socket file left by a previous charon would look ready.
	_ = os.Remove(in.SocketPath())
	_ = os.Remove(filepath.Join(dir, "run", "charon.pid"))
	stderr, err := os.OpenFile(filepath.Join(dir, "stderr.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("charon: %w", err)
	}
	defer stderr.Close()
	// ip netns exec, unshare (without --fork) and sh's exec all replace
	// the process image, so the PID of cmd is charon's.
	script := fmt.Sprintf("mount --bind %s /run && exec %s",
		shellQuote(filepath.Join(dir, "run")), shellQuote(DefaultBinary))
	cmd := exec.Command("ip", "netns", "exec", in.cfg.NetNS,
		"unshare", "-m", "--propagation", "private", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+filepath.Join(dir, "strongswan.conf"))
	cmd.Dir = dir
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	// Its own process group: a ^C to the test does not hit it first, and
	// Stop decides the order. If this process dies without stopping it
	// (a test timeout skips cleanups), charon gets SIGTERM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	done, err := testenv.StartTied(cmd)
	if err != nil {
		return fmt.Errorf("charon: start in %s: %w", in.cfg.NetNS, err)
	}
	in.cmd, in.done = cmd, done
	in.log.Info("charon started", "pid", cmd.Process.Pid)

	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := net.DialTimeout("unix", in.SocketPath(), time.Second)
		if err == nil {
			c.Close()
			in.log.Info("charon ready", "pid", cmd.Process.Pid)
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("charon: exited before its VICI socket answered (%v); log:\n%s", cmd.ProcessState, in.Log())
		case <-ctx.Done():
			in.stopLocked(10 * time.Second)
			return fmt.Errorf("charon: waiting for %s: %w", in.SocketPath(), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			in.stopLocked(10 * time.Second)
			return fmt.Errorf("charon: VICI socket %s did not answer within %v: %v", in.SocketPath(), readyTimeout, err)
		}
	}
}

// Stop sends SIGTERM to charon, waits up to grace (10 s if zero) for it to
// exit, then sends SIGKILL. Stopping a stopped instance does nothing.
func (in *Instance) Stop(grace time.Duration) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if grace == 0 {
		grace = 10 * time.Second
	}
	return in.stopLocked(grace)
}

func (in *Instance) stopLocked(grace time.Duration) error {
	if in.cmd == nil {
		return nil
	}
	select {
	case <-in.done:
		return nil
	default:
	}
	pid := in.cmd.Process.Pid
	if err := in.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("charon: SIGTERM %d: %w", pid, err)
	}
	select {
	case <-in.done:
		in.log.Info("charon stopped", "pid", pid)
		return nil
	case <-time.After(grace):
	}
	in.log.Warn("charon ignored SIGTERM, killing", "pid", pid, "grace", grace)
	_ = in.cmd.Process.Kill()
	<-in.done
	return nil
}

// Restart stops charon and starts it again in the same directory and
// namespace, then loads the swanctl configuration again. IKE SAs do not
// survive.
func (in *Instance) Restart(ctx context.Context) error {
	if err := in.Stop(0); err != nil {
		return err
	}
	return in.startAndLoad(ctx)
}

// startAndLoad starts charon and loads the swanctl configuration, if any.
func (in *Instance) startAndLoad(ctx context.Context) error {
	if err := in.start(ctx); err != nil {
		return err
	}
	if in.cfg.SwanctlConf != "" {
		if _, err := in.Swanctl(ctx, "--load-all"); err != nil {
			return err
		}
	}
	return nil
}

// Swanctl runs swanctl against this instance (outside the namespace, over
// the VICI socket, with SWANCTL_DIR set to the instance's) and returns its
// combined output. Example: Swanctl(ctx, "--initiate", "--child", "ctl").
func (in *Instance) Swanctl(ctx context.Context, args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("charon: swanctl needs a command")
	}
	// The command option comes first for swanctl's parser, then --uri.
	full := append([]string{args[0], "--uri", in.uri()}, args[1:]...)
	cmd := exec.CommandContext(ctx, "swanctl", full...)
	cmd.Env = append(os.Environ(), "SWANCTL_DIR="+in.SwanctlDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("charon: swanctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Close stops charon and removes the instance directory if Launch made it.
func (in *Instance) Close() error {
	err := in.Stop(0)
	if in.ownsDir {
		if rerr := os.RemoveAll(in.cfg.Dir); rerr != nil && err == nil {
			err = fmt.Errorf("charon: remove %s: %w", in.cfg.Dir, rerr)
		}
	}
	return err
}

// PIDFile returns the pid charon wrote into its private /run, or 0.
func (in *Instance) PIDFile() int {
	data, err := os.ReadFile(filepath.Join(in.cfg.Dir, "run", "charon.pid"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return n
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
