package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mpsa/mpsa/api"
)

// recordFlush is a groupFlusher that records the groups it is asked to
// flush and removes n objects.
type recordFlush struct {
	groups []string
	n      int
}

func (r *recordFlush) flush(_ context.Context, name string) (int, error) {
	r.groups = append(r.groups, name)
	return r.n, nil
}

// TestFlushRefusedWhileServed: a group the running mpsad serves is not
// flushed; the message says to remove it from the configuration and
// reload. Another group is flushed.
func TestFlushRefusedWhileServed(t *testing.T) {
	sock := serve(t, &staticAPI{st: api.Status{Role: "member", Groups: []api.GroupStatus{{Name: "east"}}}})
	rec := &recordFlush{n: 3}
	var out, errOut bytes.Buffer
	if code := runFlush([]string{"east", "--socket", sock}, &out, &errOut, rec.flush); code != 1 {
		t.Fatalf("flush of a served group: exit %d, want 1; %s", code, errOut.String())
	}
	if len(rec.groups) != 0 {
		t.Fatalf("flushed %v while mpsad serves it", rec.groups)
	}
	if msg := errOut.String(); !strings.Contains(msg, "served by the running mpsad") || !strings.Contains(msg, "remove it from the configuration and reload") {
		t.Errorf("message %q does not say why and what to do", msg)
	}
	out.Reset()
	if code := runFlush([]string{"mgmt", "--socket", sock}, &out, &errOut, rec.flush); code != 0 {
		t.Fatalf("flush of a group the daemon does not serve: exit %d", code)
	}
	if len(rec.groups) != 1 || rec.groups[0] != "mgmt" || !strings.Contains(out.String(), "removed 3 kernel objects") {
		t.Errorf("flushed %v, output %q", rec.groups, out.String())
	}
}

// TestFlushWithoutDaemon: with no mpsad (no socket, or a socket nobody
// listens on) the group is flushed; anything else that keeps mpsactl from
// asking the daemon refuses.
func TestFlushWithoutDaemon(t *testing.T) {
	dir := t.TempDir()
	rec := &recordFlush{}
	var out, errOut bytes.Buffer
	if code := runFlush([]string{"east", "--socket", filepath.Join(dir, "none.sock")}, &out, &errOut, rec.flush); code != 0 {
		t.Fatalf("no socket: exit %d: %s", code, errOut.String())
	}
	if len(rec.groups) != 1 || !strings.Contains(out.String(), "no kernel objects") {
		t.Errorf("no socket: flushed %v, output %q", rec.groups, out.String())
	}
	// A socket path below a regular file (ENOTDIR): mpsactl cannot tell
	// whether mpsad runs, so it refuses.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := runFlush([]string{"east", "--socket", filepath.Join(file, "mpsad.sock")}, &out, &errOut, rec.flush); code != 1 || len(rec.groups) != 1 {
		t.Errorf("unreadable socket: exit %d, flushed %v; want a refusal", code, rec.groups)
	}
	if code := runFlush(nil, &out, &errOut, rec.flush); code != 2 {
		t.Errorf("no group: exit %d, want 2", code)
	}
}
