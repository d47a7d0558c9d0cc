//go:build mpsavm

package vm

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMain turns the test binary into the guest's init when it runs as
// PID 1; anywhere else the guest tests do not run.
func TestMain(m *testing.M) {
	if os.Getpid() != 1 {
		fmt.Println("the mpsavm tests run only as init of the qemu guest (go test ./test/vm boots it)")
		os.Exit(0)
	}
	code := 1
	if err := setupGuest(); err != nil {
		fmt.Println("guest setup:", err)
	} else {
		code = m.Run()
	}
	verdict := "PASS"
	if code != 0 {
		verdict = "FAIL"
	}
	fmt.Println(ResultMarker, verdict)
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

// setupGuest mounts the pseudo file systems and loads the modules.
func setupGuest() error {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
		{"tmpfs", "/run", "tmpfs"},
	} {
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	_ = os.Setenv("PATH", "/")
	booted := uptime()
	if err := loadModules(ModuleList); err != nil {
		return err
	}
	loaded := uptime()
	// Without the host's root the pure-Go tests still run; the tests
	// that need the host's programs report why they cannot (needHost).
	if err := mountHostRoot(); err != nil {
		fmt.Println("guest: host root:", err)
		_ = os.WriteFile(hostRootErr, []byte(err.Error()), 0o644)
	}
	fmt.Printf("guest: init started %ss after boot, modules loaded at %ss, host root at %ss\n", booted, loaded, uptime())
	return nil
}

// uptime returns the guest's uptime in seconds, as /proc/uptime has it.
func uptime() string {
	b, _ := os.ReadFile("/proc/uptime")
	return strings.Fields(string(b) + " ?")[0]
}

// hostRootErr holds the reason the host's root is not available.
const hostRootErr = "/run/mpsa-vm-hostroot.err"

// mountHostRoot mounts the host's root (exported read-only by qemu) on
// HostRoot and makes the guest look like the host for programs: /usr,
// /bin, /sbin, /lib and /lib64 resolve into it as on the host (a merged-
// /usr host's /bin -> usr/bin stays relative), /etc is a writable tmpfs
// holding a link to every entry of the host's /etc (symbolic links copied
// as they are, so that /etc/mtab still points at the guest's /proc), and
// /var a writable tmpfs with /var/run -> /run.
func mountHostRoot() error {
	if err := os.MkdirAll(HostRoot, 0o755); err != nil {
		return err
	}
	// cache=loose: the export is read-only, so the guest may keep what it
	// read. TestCharonKernel's daemons started in 8.5 s with it and in
	// 28 s with cache=none (one run each on a busy 2-core host).
	opts := "trans=virtio,version=9p2000.L,cache=loose,msize=262144"
	if err := unix.Mount(HostRootTag, HostRoot, "9p", unix.MS_RDONLY, opts); err != nil {
		return fmt.Errorf("mount 9p %s on %s (%s): %w", HostRootTag, HostRoot, opts, err)
	}
	for _, d := range []string{"usr", "bin", "sbin", "lib", "lib64"} {
		host := filepath.Join(HostRoot, d)
		fi, err := os.Lstat(host)
		if err != nil {
			continue // no /lib64 on this host, say
		}
		target := host
		if fi.Mode()&os.ModeSymlink != 0 {
			if target, err = os.Readlink(host); err != nil {
				return err
			}
		}
		if err := os.Symlink(target, "/"+d); err != nil {
			return fmt.Errorf("link /%s: %w", d, err)
		}
	}
	for _, d := range []string{"/etc", "/var"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := unix.Mount("tmpfs", d, "tmpfs", 0, "mode=0755"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", d, err)
		}
	}
	hostEtc := filepath.Join(HostRoot, "etc")
	entries, err := os.ReadDir(hostEtc)
	if err != nil {
		return err
	}
	for _, e := range entries {
		host := filepath.Join(hostEtc, e.Name())
		target := host
		if e.Type()&os.ModeSymlink != 0 {
			if target, err = os.Readlink(host); err != nil {
				return err
			}
		}
		if err := os.Symlink(target, filepath.Join("/etc", e.Name())); err != nil {
			return err
		}
	}
	for _, d := range []string{"/var/tmp", "/var/lib", "/var/log", "/var/cache"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.Symlink("/run", "/var/run"); err != nil {
		return err
	}
	// The host's modprobe would look for the host kernel's modules: no
	// module is loaded on demand, as without the host's root.
	if err := os.WriteFile("/proc/sys/kernel/modprobe", []byte("/nonexistent/modprobe\n"), 0o644); err != nil {
		return fmt.Errorf("disable modprobe: %w", err)
	}
	return os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}

// loadModules loads every module of the list in order. A module that is
// already there is fine; any other failure is printed and the loading goes
// on, so that the tests report what is missing.
func loadModules(list string) error {
	f, err := os.Open(list)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if err := loadModule(fields[0], strings.Join(fields[1:], " ")); err != nil {
			fmt.Printf("guest: load module %s: %v\n", fields[0], err)
		}
	}
	return sc.Err()
}

func loadModule(path, params string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.FinitModule(fd, params, 0); err != nil && err != unix.EEXIST {
		return err
	}
	return nil
}
