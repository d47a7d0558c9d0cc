//go:build mpsavm

package vm

import (
	"bufio"
	"fmt"
	"os"
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
	return loadModules(ModuleList)
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
