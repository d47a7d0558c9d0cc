package bgp

import (
	"testing"
	"time"

	"github.com/mpsa/mpsa/swanctl"
)

// TestDefaultsAgree: the configuration's defaults (swanctl, which does not
// import this package) are this package's.
func TestDefaultsAgree(t *testing.T) {
	for _, d := range []struct {
		name      string
		cfg, here time.Duration
	}{
		{"hold_time", swanctl.DefaultBGPHoldTime.Std(), DefaultHoldTime},
		{"restart_time", swanctl.DefaultBGPRestartTime.Std(), DefaultRestartTime},
		{"stale_time", swanctl.DefaultBGPStaleTime.Std(), DefaultStaleTime},
		{"deferral_time", swanctl.DefaultBGPDeferralTime.Std(), DefaultDeferralTime},
		{"port", time.Duration(swanctl.DefaultBGPPort), time.Duration(DefaultPort)},
	} {
		if d.cfg != d.here {
			t.Errorf("%s: swanctl's default %v, bgp's %v", d.name, d.cfg, d.here)
		}
	}
}
