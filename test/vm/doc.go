// Package vm runs mpsa's kernel data-plane tests inside a qemu guest that
// boots Debian's stock kernel, because the build machines' own kernels have
// no ESP.
//
// The host side (the ordinary `go test ./...`) builds this package's guest
// tests, which carry the build tag mpsavm, as a static test binary; packs it
// as /init into a gzipped newc initramfs together with the kernel modules
// XFRM needs; boots qemu with software emulation; and reports every guest
// test as a subtest, with the guest's output when it fails.
//
// The kernel comes from scripts/deps.d/40-kernel.sh, which unpacks Debian's
// linux-image package into /var/cache/mpsa-test/kernel/current (or
// $MPSA_KERNEL_DIR when set). Without it, or without qemu-system-x86_64 and
// modprobe, the test skips with the reason, and fails under CI=true.
//
// Inside the guest the binary runs as PID 1: it mounts /proc, /sys, /dev,
// and tmpfs on /tmp and /run (where the named network namespaces live),
// loads the modules listed in /modules.list in order, runs the tests
// with the arguments given after "--" on the kernel command line, prints a
// result line starting with ResultMarker and powers the machine off.
//
// The guest also sees the host's programs: qemu exports the host's root
// read-only over virtio-9p (tag HostRootTag), the guest mounts it on
// HostRoot and makes /usr, /bin, /sbin, /lib and /lib64 resolve into it,
// with a writable tmpfs /etc (links to the host's entries) and /var. The
// guest tests that run real daemons use them: TestCharonKernel runs
// strongSwan's charon with the kernel's own ESP (kernel-netlink) and mpsad
// and mpsactl built on the host (whose directory the kernel command line
// passes as BinEnv) on a controller and members with the kernel data
// plane, and sends forged control messages to the members. The other
// guest tests need nothing of the host.
package vm

// ResultMarker starts the last line the guest prints: "MPSA-VM-RESULT: PASS"
// or "MPSA-VM-RESULT: FAIL".
const ResultMarker = "MPSA-VM-RESULT:"

// ModuleList is the initramfs path of the module list: one module a line,
// the path of its .ko file inside the initramfs followed by its parameters,
// in load order.
const ModuleList = "/modules.list"

// HostRootTag is the virtio-9p mount tag of the host's root file system.
const HostRootTag = "hostroot"

// HostRoot is where the guest mounts the host's root file system.
const HostRoot = "/host"

// BinEnv is the environment variable (set on the kernel command line, which
// passes it to init) that holds the guest's path of the directory with
// mpsad and mpsactl built on the host.
const BinEnv = "MPSA_VM_BIN"
