// Package seqlease keeps an ESP sender's sequence numbers from going
// backwards when the same SA is installed again, after a restart of mpsad
// or a reboot, with the controller pushing the SA the group still uses.
//
// Receivers keep one anti-replay window per SA and sender. A sender that
// started again from 1 would have every packet dropped as a replay until
// its counter passed where it stopped. So before a sender uses a sequence
// number it records on disk that numbers up to some value are reserved,
// one file per SA (a lease), written a step ahead (DefaultStep numbers) so
// that the disk is touched once per step, not per packet. When the SA is
// installed again, the numbers continue above the recorded reservation:
// some are skipped, none reused. The file is removed with the SA.
//
// A sender that cannot be held to its reservation number by number (the
// kernel's ESP, which numbers its packets itself) keeps the reservation
// ahead of the numbers it reads (Reserve), and once it has stopped and
// read its last number records that exactly (Settle), so that the SA
// installed again continues right after it rather than after the unused
// rest of the reservation. Raise records numbers found in use outside a
// lease (states an earlier run left in the kernel).
//
// The hot path, Lease.Allows, is one atomic load and compare; the next
// reservation is written in the background once half a step is used, and
// a sender that outruns the disk is refused numbers (it must drop, never
// send an unreserved number) until the write is done.
package seqlease

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpsa/mpsa/mpsa"
)

// Max is the highest sequence number of an SA without extended sequence
// numbers; a lease never reserves beyond it.
const Max = math.MaxUint32

// DefaultStep is how many numbers a reservation adds: at a million packets
// a second, one small file write a second.
const DefaultStep = 1 << 20

// Dir is a directory of leases, one file per name.
type Dir struct {
	path string
	log  *slog.Logger
}

// OpenDir returns the lease directory at path, creating it (mode 0700, its
// parents too) if needed. Lease events are logged to log (slog.Default()
// if nil).
func OpenDir(path string, log *slog.Logger) (*Dir, error) {
	if path == "" {
		return nil, errors.New("sequence lease directory: empty path")
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("sequence lease directory: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Dir{path: path, log: log}, nil
}

// PruneAge is the age past which OpenPruned removes a lease: a member
// holds no SA longer than mpsa.MaxLifetime after the SA's lease was last
// written (at installation and at every reservation), so an older lease
// is of an SA that ended without Remove (a crash, a group stopped while
// it lived); a day more for clocks that were set.
const PruneAge = mpsa.MaxLifetime + 24*time.Hour

// OpenPruned is OpenDir followed by Prune of the leases older than age,
// what a data plane does at start. A failed prune is logged, not
// returned: the leases it could not remove only take room.
func OpenPruned(path string, age time.Duration, log *slog.Logger) (*Dir, error) {
	d, err := OpenDir(path, log)
	if err != nil {
		return nil, err
	}
	n, err := d.Prune(age, time.Now())
	if err != nil {
		d.log.Warn("removing sequence-number leases of ended SAs", "err", err)
	}
	if n > 0 {
		d.log.Info("removed sequence-number leases of ended SAs", "files", n)
	}
	return d, nil
}

// Path returns the directory's path.
func (d *Dir) Path() string { return d.path }

// Prune removes the leases (and leftover temporary files) last written
// before now - age, and returns how many it removed. A lease is written
// when its SA is installed and at every reservation, so with age above the
// longest SA lifetime only the leases of SAs that ended without Remove (a
// crash, a group stopped while they lived) go. Other files are left alone.
func (d *Dir) Prune(age time.Duration, now time.Time) (int, error) {
	entries, err := os.ReadDir(d.path)
	if err != nil {
		return 0, fmt.Errorf("sequence lease directory: %w", err)
	}
	n := 0
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !validName(name) && !isTemp(name) {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(now.Add(-age)) {
			continue
		}
		if err := os.Remove(filepath.Join(d.path, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("sequence lease directory: %w", errors.Join(errs...))
	}
	return n, nil
}

// Lease is the reservation of one SA's outbound sequence numbers. Allows
// is safe for concurrent use; Reserve, Settle and Remove serialize with
// the background writes.
type Lease struct {
	path  string
	step  uint64
	start uint32
	log   *slog.Logger

	// reserved is the highest number that may be used; it only grows,
	// until Settle.
	reserved atomic.Uint64
	// extending is set while a background write runs.
	extending atomic.Bool
	// failing is set after a background write failed, until one
	// succeeds: the failure is logged once.
	failing atomic.Bool

	mu      sync.Mutex // serializes writes, Settle and Remove
	removed bool
	settled bool
	err     error // of the last write
}

// Acquire reads the lease name (if an earlier run left one) and reserves
// the first step above it, before it returns: the returned lease's Start
// is the highest number that may have been used before, and Allows
// permits the numbers after it. step is the size of a reservation
// (DefaultStep if 0). A lease file that cannot be read or parsed is an
// error: nothing tells then where the numbers stopped. A first
// reservation that cannot be written is not: the lease then permits no
// number above Start, Err reports the failure, and Allows retries the
// write in the background until one succeeds, so that the sender sends
// nothing unreserved while the SA can still receive.
func (d *Dir) Acquire(name string, step uint64) (*Lease, error) {
	if !validName(name) {
		return nil, fmt.Errorf("sequence lease %q: a name is letters, digits, '-' and '_'", name)
	}
	if step == 0 {
		step = DefaultStep
	}
	l := &Lease{path: filepath.Join(d.path, name), step: step, log: d.log.With("lease", filepath.Join(d.path, name))}
	// Temporary files of a write that a crash interrupted.
	if tmps, err := filepath.Glob(filepath.Join(d.path, "."+name+".*")); err == nil {
		for _, t := range tmps {
			os.Remove(t)
		}
	}
	last, err := readLease(l.path)
	if err != nil {
		return nil, err
	}
	l.start = uint32(last)
	l.reserved.Store(last)
	if err := l.Reserve(uint32(min(last+step, Max))); err != nil {
		// The caller reports it (Err); a later write that succeeds is
		// logged.
		l.failing.Store(true)
	}
	return l, nil
}

func validName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// isTemp reports whether name is a temporary file of writeFileSync for a
// lease: ".NAME.RANDOM".
func isTemp(name string) bool {
	rest, ok := strings.CutPrefix(name, ".")
	i := strings.LastIndexByte(rest, '.')
	return ok && i > 0 && validName(rest[:i])
}

// readLease returns the reservation recorded at path, 0 if there is no
// file.
func readLease(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sequence lease %s: %w", path, err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("sequence lease %s is corrupt (%q): it cannot tell where this SA's sequence numbers stopped; "+
			"remove the file to number from 1 again (peers then drop this member's packets as replays until the SA is rekeyed)", path, b)
	}
	return n, nil
}

// Start is the highest sequence number that an earlier run may have used
// with this SA (0 for a new one): the sender continues with Start()+1.
func (l *Lease) Start() uint32 { return l.start }

// Reserved is the highest number the lease permits now.
func (l *Lease) Reserved() uint32 { return uint32(l.reserved.Load()) }

// Allows reports whether seq is reserved on disk and may be sent. Once
// seq is past half of the last step it starts writing the next
// reservation in the background; until that is written, numbers beyond
// the current reservation are refused. It does not block and, except when
// it starts a write, does not allocate.
func (l *Lease) Allows(seq uint32) bool {
	r := l.reserved.Load()
	if uint64(seq)+l.step/2 >= r && r < Max && !l.extending.Load() && l.extending.CompareAndSwap(false, true) {
		go l.extend(seq)
	}
	return uint64(seq) <= r
}

// retryDelay is how long after a failed background write the next one
// may start: a full disk must not be retried at the packet rate.
const retryDelay = time.Second

// extend writes the next reservation, a step beyond seq, for Allows.
func (l *Lease) extend(seq uint32) {
	defer l.extending.Store(false)
	to := min(max(uint64(seq), l.reserved.Load())+l.step, Max)
	err := l.Reserve(uint32(to))
	switch {
	case errors.Is(err, errRemoved), errors.Is(err, errSettled):
	case err != nil:
		if !l.failing.Swap(true) {
			l.log.Error("cannot extend the sequence-number lease; outbound packets beyond the reserved numbers are dropped until it can", "reserved", l.Reserved(), "err", err)
		}
		time.Sleep(retryDelay)
	case l.failing.Swap(false):
		l.log.Info("sequence-number lease written again", "reserved", l.Reserved())
	}
}

// errRemoved is Reserve's error after Remove, errSettled after Settle.
var (
	errRemoved = errors.New("lease removed")
	errSettled = errors.New("lease settled")
)

// Reserve records on disk that numbers up to upTo may be used and then
// permits them. It writes a new file and renames it over the old one,
// with both synced, so that a crash leaves one reservation or the other.
// A reservation at or below the current one changes nothing. After Remove
// or Settle it fails.
func (l *Lease) Reserve(upTo uint32) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.ended(); err != nil {
		return err
	}
	if uint64(upTo) <= l.reserved.Load() {
		return nil
	}
	if err := writeFileSync(l.path, []byte(strconv.FormatUint(uint64(upTo), 10)+"\n")); err != nil {
		l.err = fmt.Errorf("sequence lease %s: %w", l.path, err)
		return l.err
	}
	l.err = nil
	l.reserved.Store(uint64(upTo))
	return nil
}

// ended returns the error for a lease that was removed or settled; l.mu
// is held.
func (l *Lease) ended() error {
	switch {
	case l.removed:
		return fmt.Errorf("sequence lease %s: %w", l.path, errRemoved)
	case l.settled:
		return fmt.Errorf("sequence lease %s: %w", l.path, errSettled)
	}
	return nil
}

// Settle ends the lease of a sender that has stopped for good and whose
// highest used number is known: the file then records used, or Start if
// that is higher (an earlier run may have used numbers up to Start), even
// when that is below the reservation. The SA installed again then
// continues right after it. A number the sender used above the one given
// would be used again: Settle is only for a sender that read its last
// number after it stopped sending. From then on Allows refuses every
// number above the record and Reserve and Settle fail; the file stays for
// the next Acquire (Remove deletes it).
func (l *Lease) Settle(used uint32) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.ended(); err != nil {
		return err
	}
	l.settled = true
	rec := max(used, l.start)
	l.reserved.Store(uint64(min(uint64(rec), l.reserved.Load())))
	if err := writeFileSync(l.path, []byte(strconv.FormatUint(uint64(rec), 10)+"\n")); err != nil {
		// The reservation on disk stays: higher, so never wrong.
		l.err = fmt.Errorf("sequence lease %s: %w", l.path, err)
		return l.err
	}
	l.err = nil
	return nil
}

// Raise records in the lease file name that numbers up to used may have
// been used, unless the file records more already, for numbers found in
// use outside a lease: those of the outbound states an earlier run left
// in the kernel, read before they are deleted. The next Acquire starts
// above them. A file that cannot be read or parsed is an error, as for
// Acquire.
func (d *Dir) Raise(name string, used uint32) error {
	if !validName(name) {
		return fmt.Errorf("sequence lease %q: a name is letters, digits, '-' and '_'", name)
	}
	path := filepath.Join(d.path, name)
	last, err := readLease(path)
	if err != nil {
		return err
	}
	if uint64(used) <= last {
		return nil
	}
	if err := writeFileSync(path, []byte(strconv.FormatUint(uint64(used), 10)+"\n")); err != nil {
		return fmt.Errorf("sequence lease %s: %w", path, err)
	}
	return nil
}

// Err returns the error of the last write, nil if it succeeded.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Remove deletes the lease file, once the SA is gone for good; from then
// on Allows refuses every number not yet permitted and Reserve fails. A
// file already gone is not an error.
func (l *Lease) Remove() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.removed = true
	if err := os.Remove(l.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sequence lease: %w", err)
	}
	return nil
}

// writeFileSync replaces path with data: a temporary file in the same
// directory, synced, renamed over path, and the directory synced.
func writeFileSync(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
