package kernel

import (
	"context"
	"strings"
	"testing"

	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/xfrm"
)

// These checks happen before the backend talks to the kernel, so they run
// on any host.
func TestInstallInboundRefusesBeforeTouchingTheKernel(t *testing.T) {
	gcm := mpsa.Suite{Encr: mpsa.EncrAESGCM16, KeyBits: 128, PRF: mpsa.PRFHMACSHA2_256}
	cbc := mpsa.Suite{Encr: mpsa.EncrAESCBC, KeyBits: 128, PRF: mpsa.PRFHMACSHA2_256, Integ: mpsa.IntegHMACSHA2_256}
	for name, tc := range map[string]struct {
		sa   xfrm.SA
		want string
	}{
		"counter mode":    {xfrm.SA{SPI: 0x1000, Suite: gcm, EncrKey: make([]byte, 20)}, "RFC 6054"},
		"reserved SPI":    {xfrm.SA{SPI: 0xff, Suite: cbc, EncrKey: make([]byte, 16), IntegKey: make([]byte, 32)}, "reserved"},
		"short integ key": {xfrm.SA{SPI: 0x1000, Suite: cbc, EncrKey: make([]byte, 16), IntegKey: make([]byte, 20)}, "integrity key is 20 bytes"},
		"already there":   {xfrm.SA{SPI: 0x2000, Suite: cbc, EncrKey: make([]byte, 16), IntegKey: make([]byte, 32)}, "already installed"},
	} {
		b := testBackend("192.0.2.1")
		b.sas = map[uint32]installed{0x2000: {}}
		err := b.InstallInbound(context.Background(), tc.sa)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, tc.want)
		}
	}
}

func TestSetOutboundNeedsInstalledSA(t *testing.T) {
	b := testBackend("192.0.2.1")
	b.sas = map[uint32]installed{}
	if err := b.SetOutbound(context.Background(), 0x1234); err == nil || !strings.Contains(err.Error(), "not installed") {
		t.Errorf("got %v, want 'not installed'", err)
	}
	if err := b.Remove(context.Background(), 0x1234); err == nil || !strings.Contains(err.Error(), "not installed") {
		t.Errorf("Remove: got %v, want 'not installed'", err)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	if _, err := New(context.Background(), Config{}); err == nil {
		t.Error("New without underlay succeeded")
	}
	if _, err := New(context.Background(), Config{Underlay: testBackend("192.0.2.1").cfg.Underlay, Interface: "mpsa0"}); err == nil || !strings.Contains(err.Error(), "if_id") {
		t.Errorf("New with an interface and no if_id: %v", err)
	}
}
