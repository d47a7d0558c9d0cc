//go:build mpsavm

package vm

import (
	"os"
	"testing"
)

// TestGuestKernelHasXFRM checks that the modules loaded: the kernel's XFRM
// statistics and the xfrm_user netlink family are there.
func TestGuestKernelHasXFRM(t *testing.T) {
	b, err := os.ReadFile("/proc/net/xfrm_stat")
	if err != nil {
		t.Fatalf("no XFRM in the guest kernel: %v", err)
	}
	if len(b) == 0 {
		t.Fatal("/proc/net/xfrm_stat is empty")
	}
	mods, err := os.ReadFile("/proc/modules")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"xfrm_user", "esp4", "esp6", "xfrm_interface", "drbg", "veth"} {
		if !containsModule(string(mods), m) {
			t.Errorf("module %s not loaded", m)
		}
	}
}
