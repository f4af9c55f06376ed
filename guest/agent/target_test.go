package main

import (
	"archive/tar"
	"bytes"
	"io"
	"math/rand"
	"microbox/proto"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

type tarEntry struct {
	hdr  *tar.Header
	data []byte
}

// tarGet runs TAR_GET and returns the entries in order.
func (h *testHost) tarGet(stream uint32, path string) []tarEntry {
	h.t.Helper()
	h.sendJSON(proto.TarGet, stream, map[string]interface{}{"path": path})
	raw := h.readData(stream)
	if f := h.expect(proto.Done, stream); string(f.Payload) != "{}" {
		h.t.Fatalf("DONE %q", f.Payload)
	}
	return readTar(h.t, raw)
}

func readTar(t *testing.T, raw []byte) []tarEntry {
	t.Helper()
	var out []tarEntry
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		out = append(out, tarEntry{hdr, b})
	}
}

// makeTree builds a tree with every kind of entry TAR_GET stores.
func makeTree(t *testing.T, root string) []byte {
	t.Helper()
	big := make([]byte, 3*chunkSize+100)
	rand.New(rand.NewSource(3)).Read(big)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "sub", "deeper"), 0o755))
	must(os.WriteFile(filepath.Join(root, "sub", "big"), big, 0o640))
	must(os.WriteFile(filepath.Join(root, "setuid"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Chmod(filepath.Join(root, "setuid"), 0o4755|os.ModeSetuid))
	must(os.Link(filepath.Join(root, "setuid"), filepath.Join(root, "hardlink")))
	must(os.Symlink("sub/big", filepath.Join(root, "rel-link")))
	must(os.Symlink("/nonexistent/target", filepath.Join(root, "dangling")))
	must(syscall.Mkfifo(filepath.Join(root, "fifo"), 0o600))
	must(os.WriteFile(filepath.Join(root, "name-\xff"), []byte("bytes"), 0o600))
	must(os.Chown(filepath.Join(root, "sub", "big"), 1234, 5678))
	must(os.Lchown(filepath.Join(root, "rel-link"), 42, 43))
	if l, err := net.Listen("unix", filepath.Join(root, "sock")); err == nil {
		t.Cleanup(func() { l.Close() })
	}
	mtime := time.Unix(1700000000, 123456789)
	must(os.Chtimes(filepath.Join(root, "sub", "big"), mtime, mtime))
	must(os.Chtimes(filepath.Join(root, "sub"), mtime, mtime))
	return big
}

func TestTarGetTree(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	big := makeTree(t, root)
	h := newHost(t)
	h.hello()
	entries := h.tarGet(1, root+"/")
	byName := map[string]tarEntry{}
	var names []string
	for _, e := range entries {
		if e.hdr.Format != tar.FormatPAX && e.hdr.Format != tar.FormatUSTAR {
			t.Errorf("%s: format %v", e.hdr.Name, e.hdr.Format)
		}
		byName[e.hdr.Name] = e
		names = append(names, e.hdr.Name)
	}
	want := []string{"tree/", "tree/dangling", "tree/fifo", "tree/hardlink", "tree/name-\xff",
		"tree/rel-link", "tree/setuid", "tree/sub/", "tree/sub/big", "tree/sub/deeper/"}
	if len(names) != len(want) {
		t.Fatalf("entries %q, want %q", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("entries %q, want %q", names, want)
		}
	}
	check := func(name string, typ byte, mode int64) tarEntry {
		t.Helper()
		e := byName[name]
		if e.hdr.Typeflag != typ || e.hdr.Mode != mode {
			t.Fatalf("%s: type %c mode %o, want %c %o", name, e.hdr.Typeflag, e.hdr.Mode, typ, mode)
		}
		return e
	}
	e := check("tree/sub/big", tar.TypeReg, 0o640)
	if !bytes.Equal(e.data, big) || e.hdr.Uid != 1234 || e.hdr.Gid != 5678 {
		t.Fatalf("sub/big: %d bytes, uid %d gid %d", len(e.data), e.hdr.Uid, e.hdr.Gid)
	}
	if !e.hdr.ModTime.Equal(time.Unix(1700000000, 123456789)) {
		t.Fatalf("sub/big mtime %v", e.hdr.ModTime)
	}
	if e := check("tree/sub/", tar.TypeDir, 0o755); e.hdr.ModTime.Unix() != 1700000000 {
		t.Fatalf("sub/ mtime %v", e.hdr.ModTime)
	}
	check("tree/setuid", tar.TypeReg, 0o4755)
	if e := check("tree/hardlink", tar.TypeReg, 0o4755); string(e.data) != "#!/bin/sh\n" {
		t.Fatalf("hardlink %q", e.data)
	}
	if e := check("tree/rel-link", tar.TypeSymlink, 0o777); e.hdr.Linkname != "sub/big" || e.hdr.Uid != 42 {
		t.Fatalf("rel-link -> %q uid %d", e.hdr.Linkname, e.hdr.Uid)
	}
	if e := check("tree/dangling", tar.TypeSymlink, 0o777); e.hdr.Linkname != "/nonexistent/target" {
		t.Fatalf("dangling -> %q", e.hdr.Linkname)
	}
	check("tree/fifo", tar.TypeFifo, 0o600)
	if e := check("tree/name-\xff", tar.TypeReg, 0o600); string(e.data) != "bytes" {
		t.Fatalf("name-\\xff %q", e.data)
	}

	// A symlink at the top is stored as itself; a file alone, under its name.
	if es := h.tarGet(2, filepath.Join(root, "rel-link")); len(es) != 1 ||
		es[0].hdr.Name != "rel-link" || es[0].hdr.Typeflag != tar.TypeSymlink {
		t.Fatalf("top symlink: %v", es)
	}
	if es := h.tarGet(3, filepath.Join(root, "sub", "big")); len(es) != 1 ||
		es[0].hdr.Name != "big" || !bytes.Equal(es[0].data, big) {
		t.Fatalf("top file: %d entries", len(es))
	}
	h.sendJSON(proto.TarGet, 4, map[string]interface{}{"path": "/dev/null"})
	if es := readTar(t, h.readData(4)); len(es) != 1 || es[0].hdr.Typeflag != tar.TypeChar ||
		es[0].hdr.Devmajor != 1 || es[0].hdr.Devminor != 3 {
		t.Fatalf("/dev/null: %+v", es[0].hdr)
	}
	h.expect(proto.Done, 4)
}

func TestTarGetErrors(t *testing.T) {
	root := t.TempDir()
	l, err := net.Listen("unix", filepath.Join(root, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.TarGet, 1, map[string]interface{}{"path": filepath.Join(root, "missing")})
	h.expectError(1, "not_found")
	h.sendJSON(proto.TarGet, 2, map[string]interface{}{"path": "relative"})
	h.expectError(2, "invalid")
	h.sendJSON(proto.TarGet, 3, map[string]interface{}{"path": filepath.Join(root, "sock")})
	h.expectError(3, "invalid")
	h.sendJSON(proto.TarGet, 4, map[string]interface{}{"path": 7})
	h.expectError(4, "invalid")
}

// The walk stays on the top's file system: a mount point is an empty directory.
func TestTarGetStaysOnOneFileSystem(t *testing.T) {
	root := t.TempDir()
	mnt := filepath.Join(root, "mnt")
	os.Mkdir(mnt, 0o700)
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "mode=0711"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	os.WriteFile(filepath.Join(mnt, "inside"), []byte("x"), 0o644)
	h := newHost(t)
	h.hello()
	es := h.tarGet(1, root)
	if len(es) != 2 || es[1].hdr.Name != filepath.Base(root)+"/mnt/" || es[1].hdr.Mode != 0o711 {
		t.Fatalf("entries %v", es)
	}
	// Asked for directly, the mounted tree is walked.
	if es := h.tarGet(2, mnt); len(es) != 2 || es[1].hdr.Name != "mnt/inside" {
		t.Fatalf("entries %v", es)
	}
}

func TestTarGetRootAndCancel(t *testing.T) {
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.TarGet, 1, map[string]interface{}{"path": "/"})
	f := h.expect(proto.Data, 1)
	hdr, err := tar.NewReader(bytes.NewReader(f.Payload)).Next()
	if err != nil || hdr.Name != "./" || hdr.Typeflag != tar.TypeDir {
		t.Fatalf("first entry of /: %v %v", hdr, err)
	}
	h.send(proto.Cancel, 1, []byte("{}"))
	for f.Type == proto.Data {
		if f = h.recv(); f.Stream != 1 {
			t.Fatalf("%s on stream %d", typeName(f.Type), f.Stream)
		}
	}
	if f.Type == proto.Done {
		t.Log("the walk of / ended before the CANCEL")
	} else if m := decodeMap(t, f.Payload); f.Type != proto.Error || m["kind"] != "cancelled" {
		t.Fatalf("%s %v", typeName(f.Type), m)
	}
	h.send(proto.Ping, 0, nil)
	h.expect(proto.Pong, 0)
	h.recvNone()
}
