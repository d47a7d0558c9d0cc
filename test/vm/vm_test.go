//go:build !mpsavm

package vm

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/testenv"
)

// defaultKernelDir is where scripts/deps.d/40-kernel.sh unpacks the kernel.
const defaultKernelDir = "/var/cache/mpsa-test/kernel/current"

// guestModules are the modules the guest loads, in this order; their
// dependencies come first (modprobe --show-depends). The crypto modules
// come first: ESP cannot create an SA without a default RNG (drbg), drbg's
// self-tests want ctr, aesni-intel and sha512, and jitterentropy wants
// sha3. The guest has no modprobe, so nothing is loaded on demand; xcbc is
// left out on purpose, so that a guest test sees how the backend reports an
// algorithm the kernel lacks.
var guestModules = []string{
	"sha3_generic", "sha512_generic", "sha512-ssse3", "jitterentropy_rng",
	"ctr", "aesni-intel", "drbg",
	"xfrm_algo", "xfrm_user", "esp4", "esp6", "tunnel4", "tunnel6",
	"xfrm4_tunnel", "xfrm6_tunnel", "xfrm_interface",
	"authenc", "echainiv", "seqiv", "gcm", "ghash-clmulni-intel", "ghash-generic",
	"chacha-x86_64", "chacha_generic", "poly1305-x86_64", "poly1305_generic", "chacha20poly1305",
	"sha1-ssse3", "sha256-ssse3",
	"veth", "dummy", "bridge", "tun",
	// The host's root over virtio-9p (HostRootTag): charon, swanctl, ip
	// and the rest of the host's programs for the guest tests that run
	// real daemons.
	"virtio_pci", "9pnet_virtio", "9p",
}

// kernel is an unpacked Debian kernel package.
type kernel struct {
	dir     string // root of the unpacked package
	version string // "6.1.0-56-amd64"
	vmlinuz string
}

func findKernel(t *testing.T) kernel {
	t.Helper()
	dir := os.Getenv("MPSA_KERNEL_DIR")
	if dir == "" {
		dir = defaultKernelDir
	}
	v, err := os.ReadFile(filepath.Join(dir, "VERSION"))
	if err != nil {
		testenv.Unavailable(t, "no unpacked kernel in %s (set MPSA_KERNEL_DIR or run scripts/deps.d/40-kernel.sh): %v", dir, err)
	}
	k := kernel{dir: dir, version: strings.TrimSpace(string(v))}
	k.vmlinuz = filepath.Join(dir, "boot", "vmlinuz-"+k.version)
	testenv.NeedFile(t, k.vmlinuz)
	testenv.NeedFile(t, filepath.Join(dir, "lib", "modules", k.version, "modules.dep"))
	return k
}

// moduleFiles resolves guestModules with their dependencies into initramfs
// files and the module list, in load order.
func moduleFiles(t *testing.T, k kernel) ([]initramfsFile, []byte) {
	t.Helper()
	modprobe := testenv.NeedCommand(t, "modprobe")
	var (
		files []initramfsFile
		list  bytes.Buffer
		seen  = map[string]bool{}
	)
	for _, m := range guestModules {
		out, err := exec.Command(modprobe, "-d", k.dir, "-S", k.version, "--show-depends", m).CombinedOutput()
		if err != nil {
			t.Fatalf("modprobe --show-depends %s for kernel %s: %v: %s", m, k.version, err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] == "builtin" {
				continue
			}
			if f[0] != "insmod" || len(f) < 2 {
				t.Fatalf("modprobe --show-depends %s: unexpected line %q", m, line)
			}
			src := f[1]
			if seen[src] {
				continue
			}
			seen[src] = true
			// Not under /lib: the guest links /lib to the host's.
			name := "/kmod/" + filepath.Base(src)
			files = append(files, initramfsFile{Name: name, Src: src})
			fmt.Fprintln(&list, strings.Join(append([]string{name}, f[2:]...), " "))
		}
	}
	return files, list.Bytes()
}

// buildGuest compiles the guest tests into a static test binary.
func buildGuest(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "guest.test")
	cmd := exec.Command("go", "test", "-c", "-tags", "mpsavm", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build guest test binary: %v\n%s", err, out)
	}
	return bin
}

// buildDaemons compiles mpsad and mpsactl, static, into dir/bin, which the
// guest sees under HostRoot.
func buildDaemons(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "bin")
	cmd := exec.Command("go", "build", "-o", bin+"/", "../../cmd/mpsad", "../../cmd/mpsactl")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build mpsad and mpsactl: %v\n%s", err, out)
	}
	return bin
}

var (
	runLine  = regexp.MustCompile(`=== RUN\s+(\S+)`)
	doneLine = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+)`)
)

// guestResult is the outcome of one guest test or subtest.
type guestResult struct {
	name     string // full name, "TestX" or "TestX/sub"
	status   string // PASS, FAIL, SKIP, or "" if it never finished
	output   []string
	children []*guestResult
}

// parseGuest splits the guest's -test.v console output per test, with
// subtests under their parents, and finds the verdict line.
func parseGuest(console string) (results []*guestResult, verdict string) {
	byName := map[string]*guestResult{}
	var cur *guestResult
	for _, line := range strings.Split(strings.ReplaceAll(console, "\r", ""), "\n") {
		if i := strings.Index(line, ResultMarker); i >= 0 {
			verdict = strings.TrimSpace(line[i+len(ResultMarker):])
			continue
		}
		if m := runLine.FindStringSubmatch(line); m != nil {
			r, ok := byName[m[1]]
			if !ok {
				r = &guestResult{name: m[1]}
				byName[m[1]] = r
				parent := m[1][:max(strings.LastIndexByte(m[1], '/'), 0)]
				if p, ok := byName[parent]; ok {
					p.children = append(p.children, r)
				} else {
					results = append(results, r)
				}
			}
			cur = r
			continue
		}
		if m := doneLine.FindStringSubmatch(line); m != nil {
			if r, ok := byName[m[2]]; ok {
				r.status = m[1]
				r.output = append(r.output, strings.TrimSpace(line))
				if !strings.Contains(m[2], "/") {
					cur = nil
				}
				continue
			}
		}
		if cur != nil {
			cur.output = append(cur.output, line)
		}
	}
	return results, verdict
}

// report turns one guest result into a subtest of t, recursively.
func report(t *testing.T, r *guestResult) {
	name := r.name[strings.LastIndexByte(r.name, '/')+1:]
	t.Run(strings.TrimPrefix(name, "Test"), func(t *testing.T) {
		out := strings.Join(r.output, "\n")
		for _, c := range r.children {
			report(t, c)
		}
		switch r.status {
		case "PASS":
			if testing.Verbose() && out != "" {
				t.Log("\n" + out)
			}
		case "SKIP":
			// A guest test that cannot run fails in CI, as on the host.
			testenv.Unavailable(t, "guest test skipped:\n%s", out)
		case "FAIL":
			t.Error("guest test failed:\n" + out)
		default:
			t.Error("guest test did not finish:\n" + out)
		}
	})
}

// TestKernelVM boots Debian's kernel in qemu with the guest tests as init
// and reports every guest test as a subtest.
func TestKernelVM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM; skipped with -short")
	}
	qemu := testenv.NeedCommand(t, "qemu-system-x86_64")
	k := findKernel(t)
	dir := t.TempDir()
	mods, list := moduleFiles(t, k)
	bin := buildGuest(t, dir)
	daemons, err := filepath.Abs(buildDaemons(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	files := append([]initramfsFile{
		{Name: "/init", Src: bin, Perm: 0o755},
		{Name: ModuleList, Data: list},
	}, mods...)
	initrd := filepath.Join(dir, "initrd.gz")
	if err := writeInitramfs(initrd, files); err != nil {
		t.Fatal(err)
	}

	timeout := 4 * time.Minute
	if d, ok := t.Deadline(); ok && time.Until(d)-10*time.Second < timeout {
		timeout = time.Until(d) - 10*time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	guestArgs := []string{"-test.v", "-test.timeout=" + (timeout - 15*time.Second).String()}
	if run := os.Getenv("MPSA_VM_RUN"); run != "" {
		guestArgs = append(guestArgs, "-test.run="+run)
	}
	if n := os.Getenv("MPSA_VM_COUNT"); n != "" {
		guestArgs = append(guestArgs, "-test.count="+n)
	}
	cmd := exec.Command(qemu,
		"-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "2",
		"-nographic", "-no-reboot", "-net", "none",
		// The host's root, read-only: the guest runs the host's charon,
		// swanctl and ip, and the mpsad built above. remap keeps inode
		// numbers of the host's several file systems apart.
		"-virtfs", "local,path=/,mount_tag="+HostRootTag+",security_model=none,readonly=on,multidevs=remap",
		"-kernel", k.vmlinuz, "-initrd", initrd,
		// Kernel parameters with "=" that the kernel does not know are
		// passed to init as environment variables.
		"-append", "console=ttyS0 quiet panic=-1 oops=panic "+BinEnv+"="+HostRoot+daemons+" -- "+strings.Join(guestArgs, " "))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	// Only the reader below writes console; it is read after done closes.
	var console bytes.Buffer
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	pid := cmd.Process.Pid
	waited := false
	t.Cleanup(func() {
		if !waited { // after Wait the PID may belong to someone else
			_ = syscall.Kill(pid, syscall.SIGKILL)
			_ = cmd.Wait()
		}
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			console.WriteString(sc.Text())
			console.WriteByte('\n')
			if testing.Verbose() && os.Getenv("MPSA_VM_ECHO") != "" {
				fmt.Fprintln(os.Stderr, "guest:", sc.Text())
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		_ = syscall.Kill(pid, syscall.SIGKILL)
		<-done
	}
	werr := cmd.Wait()
	waited = true
	elapsed := time.Since(start)
	out := console.String()
	t.Logf("qemu ran %.1fs (kernel %s)", elapsed.Seconds(), k.version)

	results, verdict := parseGuest(out)
	if ctx.Err() != nil {
		t.Errorf("guest did not finish within %v; killed qemu (pid %d)", timeout, pid)
	}
	for _, r := range results {
		report(t, r)
	}
	if verdict != "PASS" {
		t.Fatalf("guest verdict %q (qemu: %v); console:\n%s", verdict, werr, out)
	}
	if len(results) == 0 {
		t.Fatalf("guest ran no tests; console:\n%s", out)
	}
}
