//go:build !mpsavm

package vm

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
)

// cpioWriter writes a "newc" (SVR4 without CRC) cpio archive, the format
// the kernel unpacks as an initramfs.
type cpioWriter struct {
	w   io.Writer
	ino uint32
	off int64
	err error
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeChr  = 0o020000
)

func (c *cpioWriter) header(name string, mode uint32, size int64, rmaj, rmin uint32) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := 1
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize, check
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rmaj, rmin, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.off += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.off % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// Dir adds a directory.
func (c *cpioWriter) Dir(name string) { c.header(name, modeDir|0o755, 0, 0, 0) }

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, major, minor uint32) {
	c.header(name, modeChr|0o600, 0, major, minor)
}

// File adds a regular file with the given contents.
func (c *cpioWriter) File(name string, perm uint32, data []byte) {
	c.header(name, modeFile|perm, int64(len(data)), 0, 0)
	c.write(data)
	c.pad()
}

// Close writes the trailer.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	return c.err
}

// initramfsFile is one file to pack: its path in the archive and its
// source on the host (or its contents).
type initramfsFile struct {
	Name string
	Src  string
	Data []byte
	Perm uint32
}

// writeInitramfs writes a gzipped newc archive with the directories the
// guest init needs, /dev/console, and files.
func writeInitramfs(path string, files []initramfsFile) error {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return err
	}
	cw := &cpioWriter{w: zw}
	dirs := map[string]bool{}
	var mkdirs func(string)
	mkdirs = func(d string) {
		if d == "" || d == "." || dirs[d] {
			return
		}
		if i := strings.LastIndexByte(d, '/'); i > 0 {
			mkdirs(d[:i])
		}
		dirs[d] = true
		cw.Dir(d)
	}
	for _, d := range []string{"dev", "proc", "sys", "tmp", "run"} {
		mkdirs(d)
	}
	cw.CharDev("dev/console", 5, 1)
	for _, f := range files {
		name := strings.TrimLeft(f.Name, "/")
		if i := strings.LastIndexByte(name, '/'); i > 0 {
			mkdirs(name[:i])
		}
		data := f.Data
		if f.Src != "" {
			if data, err = os.ReadFile(f.Src); err != nil {
				return fmt.Errorf("initramfs: %w", err)
			}
		}
		perm := f.Perm
		if perm == 0 {
			perm = 0o644
		}
		cw.File(name, perm, data)
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("initramfs: write cpio: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("initramfs: gzip: %w", err)
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func TestCPIOHeaderLayout(t *testing.T) {
	var buf bytes.Buffer
	cw := &cpioWriter{w: &buf}
	cw.File("init", 0o755, []byte("abc"))
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	// 110-byte header, "init\0" (5) padded to 116, 3 data bytes padded to 120.
	if got := string(b[:6]); got != "070701" {
		t.Fatalf("magic %q", got)
	}
	if got := string(b[110:115]); got != "init\x00" {
		t.Fatalf("name %q", got)
	}
	if got := string(b[116:119]); got != "abc" {
		t.Fatalf("data %q at 116", got)
	}
	if got := string(b[120:126]); got != "070701" {
		t.Fatalf("trailer magic %q at 120", got)
	}
	if len(b)%4 != 0 {
		t.Fatalf("archive length %d not 4-aligned", len(b))
	}
}
