package vici_test

import (
	"log/slog"
	"testing"

	"github.com/mpsa/mpsa/vici"
)

// testLogger logs to the test log at debug level.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tw{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tw struct{ t *testing.T }

func (w tw) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

// TestChildClosedIsRoutine: the messages charon logs at every CHILD_SA
// delete are failures to show (ChildFailure) but marked as routine
// closes (ChildClosed); a delete the peer sent or a failure is not.
func TestChildClosedIsRoutine(t *testing.T) {
	for _, c := range []struct {
		msg            string
		failure, close bool
	}{
		{"closing CHILD_SA ctl{5} with SPIs c1234567_i 01234567_o and TS 10.98.1.1/32 === 10.98.0.1/32", true, true},
		{"CHILD_SA closed", true, true},
		{"received DELETE for ESP CHILD_SA with SPI c1234567", true, false},
		{"received NO_PROPOSAL_CHOSEN notify, no CHILD_SA built", true, false},
		{"IKE_SA mpsa[1] established between 192.0.2.11[m1]...192.0.2.1[c]", false, false},
	} {
		e := vici.LogEvent{Group: "IKE", IKEName: "mpsa", IKEUniqueID: 1, Msg: c.msg}
		if e.ChildFailure() != c.failure || e.ChildClosed() != c.close {
			t.Errorf("%q: ChildFailure %v, ChildClosed %v; want %v, %v", c.msg, e.ChildFailure(), e.ChildClosed(), c.failure, c.close)
		}
	}
}
