package main

import (
	"archive/tar"
	"bytes"
	"microbox/proto"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tarPut sends raw as TAR_PUT into dir and returns the last frame.
func (h *testHost) tarPut(stream uint32, dir string, raw []byte) Frame {
	h.t.Helper()
	h.sendJSON(proto.TarPut, stream, map[string]interface{}{"path": dir})
	h.sendChunks(proto.Data, stream, raw)
	h.send(proto.Data, stream, nil)
	return h.recv()
}

func (h *testHost) wantDone(f Frame, stream uint32) {
	h.t.Helper()
	if f.Type != proto.Done || f.Stream != stream || string(f.Payload) != "{}" {
		h.t.Fatalf("got %s on stream %d (%s), want DONE on %d", typeName(f.Type), f.Stream, f.Payload, stream)
	}
}

func (h *testHost) wantError(f Frame, stream uint32, kind, contains string) {
	h.t.Helper()
	if f.Type != proto.Error || f.Stream != stream {
		h.t.Fatalf("got %s on stream %d (%s), want ERROR on %d", typeName(f.Type), f.Stream, f.Payload, stream)
	}
	m := decodeMap(h.t, f.Payload)
	if m["kind"] != kind || !strings.Contains(m["message"].(string), contains) {
		h.t.Fatalf("ERROR %v, want kind %s with %q", m, kind, contains)
	}
}

func buildTar(t *testing.T, hdrs ...*tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, hdr := range hdrs {
		hdr.Format = tar.FormatPAX // keeps sub-second mtimes
		if hdr.Typeflag == tar.TypeReg && hdr.Size == 0 && hdr.Linkname != "" {
			body := hdr.Linkname // test shorthand: Linkname of a regular file is its content
			hdr.Linkname, hdr.Size = "", int64(len(body))
			if err := tw.WriteHeader(hdr); err != nil {
				t.Fatal(err)
			}
			tw.Write([]byte(body))
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	return b.Bytes()
}

func lstat(t *testing.T, path string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func TestTarRoundTrip(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "tree")
	makeTree(t, src)
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.TarGet, 1, map[string]interface{}{"path": src})
	raw := h.readData(1)
	h.expect(proto.Done, 1)
	// Padding after the end of the archive, as tar(1) writes, is read and dropped.
	raw = append(raw, make([]byte, 10240)...)
	dest := filepath.Join(base, "dest")
	os.Mkdir(dest, 0o755)
	h.wantDone(h.tarPut(2, dest, raw), 2)

	for _, rel := range []string{"", "sub", "sub/big", "sub/deeper", "setuid", "hardlink", "rel-link",
		"dangling", "fifo", "name-\xff"} {
		a, b := lstat(t, filepath.Join(src, rel)), lstat(t, filepath.Join(dest, "tree", rel))
		if a.Mode != b.Mode || a.Uid != b.Uid || a.Gid != b.Gid || a.Size != b.Size {
			t.Errorf("%s: mode %o uid %d gid %d size %d, want %o %d %d %d",
				rel, b.Mode, b.Uid, b.Gid, b.Size, a.Mode, a.Uid, a.Gid, a.Size)
		}
		if a.Mode&syscall.S_IFMT != syscall.S_IFDIR || rel == "sub" {
			if a.Mtim != b.Mtim {
				t.Errorf("%s: mtime %v, want %v", rel, b.Mtim, a.Mtim)
			}
		}
	}
	for _, rel := range []string{"sub/big", "name-\xff", "hardlink"} {
		a, _ := os.ReadFile(filepath.Join(src, rel))
		b, _ := os.ReadFile(filepath.Join(dest, "tree", rel))
		if !bytes.Equal(a, b) {
			t.Errorf("%s: content differs", rel)
		}
	}
	if l, _ := os.Readlink(filepath.Join(dest, "tree", "dangling")); l != "/nonexistent/target" {
		t.Errorf("dangling -> %q", l)
	}
	if entries, _ := filepath.Glob(filepath.Join(dest, "tree", ".microbox-*")); len(entries) != 0 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestTarPutReplacesAndKeepsOwners(t *testing.T) {
	dest := t.TempDir()
	outside := t.TempDir()
	os.WriteFile(filepath.Join(dest, "a"), []byte("old"), 0o600)
	os.WriteFile(filepath.Join(outside, "victim"), []byte("keep"), 0o600)
	os.Symlink(filepath.Join(outside, "victim"), filepath.Join(dest, "b"))
	mtime := time.Unix(1600000000, 5)
	raw := buildTar(t,
		&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o700},
		&tar.Header{Name: "./a", Typeflag: tar.TypeReg, Mode: 0o2755, Uid: 7, Gid: 8, ModTime: mtime, Linkname: "new"},
		&tar.Header{Name: "b", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "not through the link"},
		&tar.Header{Name: "deep/er/c", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "c"},
		&tar.Header{Name: "hard", Typeflag: tar.TypeLink, Linkname: "deep/er/c"},
		&tar.Header{Name: "dev", Typeflag: tar.TypeChar, Mode: 0o620, Devmajor: 1, Devminor: 3, Uid: 3},
	)
	h := newHost(t)
	h.hello()
	h.wantDone(h.tarPut(1, dest, raw), 1)
	st := lstat(t, filepath.Join(dest, "a"))
	if st.Mode != syscall.S_IFREG|0o2755 || st.Uid != 7 || st.Gid != 8 || st.Mtim.Sec != 1600000000 || st.Mtim.Nsec != 5 {
		t.Fatalf("a: %+v", st)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "a")); string(b) != "new" {
		t.Fatalf("a: %q", b)
	}
	if st := lstat(t, filepath.Join(dest, "b")); st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		t.Fatal("the symlink b was not replaced")
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "victim")); string(b) != "keep" {
		t.Fatalf("wrote through a symlink: %q", b)
	}
	if a, b := lstat(t, filepath.Join(dest, "hard")), lstat(t, filepath.Join(dest, "deep/er/c")); a.Ino != b.Ino {
		t.Fatal("hard link is not a link")
	}
	if st := lstat(t, filepath.Join(dest, "dev")); st.Mode != syscall.S_IFCHR|0o620 || st.Rdev != uint64(mkdev(1, 3)) || st.Uid != 3 {
		t.Fatalf("dev: %+v", st)
	}
	if st := lstat(t, dest); st.Mode&0o777 == 0o700 {
		t.Fatal("the destination's own mode changed")
	}
}

func TestTarPutRefuses(t *testing.T) {
	outside := t.TempDir()
	cases := []struct {
		want string // in the message
		hdrs []*tar.Header
	}{
		{"absolute name", []*tar.Header{{Name: "/etc/x", Typeflag: tar.TypeReg, Linkname: "x"}}},
		{"goes up", []*tar.Header{{Name: "a/../../x", Typeflag: tar.TypeReg, Linkname: "x"}}},
		{"link is a symbolic link", []*tar.Header{
			{Name: "link", Typeflag: tar.TypeSymlink, Linkname: outside},
			{Name: "link/x", Typeflag: tar.TypeReg, Linkname: "x"},
		}},
		{"file is a symbolic link or a file", []*tar.Header{
			{Name: "file", Typeflag: tar.TypeReg, Linkname: "x"},
			{Name: "file/x", Typeflag: tar.TypeReg, Linkname: "x"},
		}},
		{"link is a symbolic link", []*tar.Header{
			{Name: "link", Typeflag: tar.TypeSymlink, Linkname: outside},
			{Name: "link/", Typeflag: tar.TypeDir, Mode: 0o777},
		}},
		{"names the destination", []*tar.Header{{Name: ".", Typeflag: tar.TypeReg, Linkname: "x"}}},
		{"hard link", []*tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "../x"}}},
	}
	h := newHost(t)
	h.hello()
	stream := uint32(1)
	for _, c := range cases {
		dest := t.TempDir()
		h.wantError(h.tarPut(stream, dest, buildTar(t, c.hdrs...)), stream, "invalid", c.want)
		stream++
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("wrote outside: %v", entries)
	}
	// A symbolic link already in the destination is not followed either.
	dest := t.TempDir()
	os.Symlink(outside, filepath.Join(dest, "link"))
	f := h.tarPut(stream, dest, buildTar(t, &tar.Header{Name: "link/x", Typeflag: tar.TypeReg, Linkname: "x"}))
	h.wantError(f, stream, "invalid", "symbolic link")
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("wrote outside: %v", entries)
	}
}

func TestTarPutErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.TarPut, 1, map[string]interface{}{"path": filepath.Join(dir, "missing")})
	h.expectError(1, "not_found")
	h.send(proto.Data, 1, []byte("ignored"))
	h.sendJSON(proto.TarPut, 2, map[string]interface{}{"path": file})
	h.expectError(2, "invalid")
	h.sendJSON(proto.TarPut, 3, map[string]interface{}{"path": "rel"})
	h.expectError(3, "invalid")
	raw := buildTar(t, &tar.Header{Name: "big", Typeflag: tar.TypeReg, Linkname: strings.Repeat("x", 5000)})
	h.wantError(h.tarPut(4, dir, raw[:2000]), 4, "invalid", "ended")
	h.wantError(h.tarPut(5, dir, bytes.Repeat([]byte("garbage!"), 100)), 5, "invalid", "bad tar")
	// An empty stream is an empty archive.
	h.wantDone(h.tarPut(6, dir, nil), 6)
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
}

// DONE waits for the host's empty DATA; CANCEL removes the partial file.
func TestTarPutWaitsAndCancels(t *testing.T) {
	dir := t.TempDir()
	h := newHost(t)
	h.hello()
	raw := buildTar(t, &tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"})
	h.sendJSON(proto.TarPut, 1, map[string]interface{}{"path": dir})
	h.send(proto.Data, 1, raw)
	h.recvNone()
	h.send(proto.Data, 1, nil)
	h.expect(proto.Done, 1)

	hdr := buildTar(t, &tar.Header{Name: "g", Typeflag: tar.TypeReg, Linkname: strings.Repeat("y", 1<<20)})
	h.sendJSON(proto.TarPut, 2, map[string]interface{}{"path": dir})
	h.send(proto.Data, 2, hdr[:600*1024])
	h.send(proto.Ping, 0, nil)
	h.expect(proto.Pong, 0)
	h.send(proto.Cancel, 2, []byte("{}"))
	h.expectError(2, "cancelled")
	deadline := time.Now().Add(testTimeout)
	for {
		entries, _ := os.ReadDir(dir)
		if len(entries) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: %v", entries)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
