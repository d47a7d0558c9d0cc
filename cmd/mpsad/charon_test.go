package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/testenv"
)

// TestExamplesLoadInCharon loads the connections and secrets of each
// example configuration into a real charon with swanctl --load-all, so the
// examples stay complete swanctl.conf files. charon runs in its own network
// and mount namespaces with a private /run and VICI socket, so it cannot
// disturb another charon on the machine.
func TestExamplesLoadInCharon(t *testing.T) {
	testenv.NeedRoot(t)
	const charon = "/usr/lib/ipsec/charon"
	testenv.NeedFile(t, charon)
	swanctl := testenv.NeedCommand(t, "swanctl")
	unshare := testenv.NeedCommand(t, "unshare")

	dir := t.TempDir()
	socket := filepath.Join(dir, "charon.vici")
	conf := fmt.Sprintf(`charon {
  load = random nonce openssl pem pkcs1 x509 pubkey kdf hmac sha1 sha2 aes gcm curve25519 gmp kernel-netlink socket-default vici
  plugins { vici { socket = unix://%s } }
  filelog { main { path = %s
    default = 1 } }
  syslog { daemon { default = -1 } }
}
`, socket, filepath.Join(dir, "charon.log"))
	if err := os.WriteFile(filepath.Join(dir, "strongswan.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(unshare, "-n", "-m", "--propagation", "private", "sh", "-c",
		fmt.Sprintf("mount --bind %s/run /run && ip link set lo up && STRONGSWAN_CONF=%s/strongswan.conf exec %s", dir, dir, charon))
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting charon: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(socket); err == nil {
			break
		}
		select {
		case <-done:
			t.Fatalf("charon exited: %s", out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("charon's VICI socket did not appear: %s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}

	for _, name := range []string{"controller.conf", "member.conf"} {
		path, err := filepath.Abs(filepath.Join("..", "..", "packaging", "examples", name))
		if err != nil {
			t.Fatal(err)
		}
		res, err := exec.Command(swanctl, "--load-all", "--file", path, "--uri", "unix://"+socket).CombinedOutput()
		if err != nil {
			t.Errorf("%s: swanctl --load-all: %v\n%s", name, err, res)
			continue
		}
		for _, want := range []string{"loaded ike secret 'ike-branch'", "loaded connection 'mpsa'", "successfully loaded 1 connections"} {
			if !strings.Contains(string(res), want) {
				t.Errorf("%s: swanctl output lacks %q:\n%s", name, want, res)
			}
		}
	}
}
