package vici_test

import (
	"log/slog"
	"testing"
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
