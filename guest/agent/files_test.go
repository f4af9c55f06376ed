package main

import (
	"bytes"
	"math/rand"
	"microbox/proto"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestPutGetRoundTrip(t *testing.T) {
	dir := t.TempDir()
	h := newHost(t)
	h.hello()
	content := make([]byte, 300*1024+17)
	rand.New(rand.NewSource(1)).Read(content)
	path := filepath.Join(dir, "a", "b", "file.bin")

	h.sendJSON(proto.Put, 2, map[string]interface{}{"path": path, "mode": 0o640, "mkdirs": true})
	for off := 0; off < len(content); off += chunkSize {
		end := off + chunkSize
		if end > len(content) {
			end = len(content)
		}
		h.send(proto.Data, 2, content[off:end])
	}
	h.send(proto.Data, 2, nil)
	if f := h.expect(proto.Done, 2); string(f.Payload) != "{}" {
		t.Fatalf("DONE %q", f.Payload)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("stat: %v %v", st, err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, content) {
		t.Fatal("content differs after PUT")
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}

	h.sendJSON(proto.Get, 3, map[string]interface{}{"path": path})
	m := decodeMap(t, h.expect(proto.File, 3).Payload)
	if m["mode"] != float64(0o640) || m["size"] != float64(len(content)) {
		t.Fatalf("FILE %v", m)
	}
	var got bytes.Buffer
	for {
		f := h.expect(proto.Data, 3)
		if len(f.Payload) == 0 {
			break
		}
		if len(f.Payload) > chunkSize {
			t.Fatalf("DATA chunk of %d bytes", len(f.Payload))
		}
		got.Write(f.Payload)
	}
	if !bytes.Equal(got.Bytes(), content) {
		t.Fatal("content differs after GET")
	}

	// Overwrite with an empty file and a 1 MiB frame; default mode 0644.
	h.sendJSON(proto.Put, 4, map[string]interface{}{"path": path})
	h.send(proto.Data, 4, make([]byte, maxPayload))
	h.send(proto.Data, 4, nil)
	h.expect(proto.Done, 4)
	if st, _ := os.Stat(path); st.Size() != maxPayload || st.Mode().Perm() != 0o644 {
		t.Fatalf("after overwrite: %v", st)
	}
	h.sendJSON(proto.Put, 5, map[string]interface{}{"path": path, "mode": 0o755})
	h.send(proto.Data, 5, nil)
	h.expect(proto.Done, 5)
	h.sendJSON(proto.Get, 6, map[string]interface{}{"path": path})
	m = decodeMap(t, h.expect(proto.File, 6).Payload)
	if m["mode"] != float64(0o755) || m["size"] != float64(0) {
		t.Fatalf("FILE %v", m)
	}
	if f := h.expect(proto.Data, 6); len(f.Payload) != 0 {
		t.Fatal("data for an empty file")
	}
}

func TestPutGetErrors(t *testing.T) {
	dir := t.TempDir()
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Get, 1, map[string]interface{}{"path": filepath.Join(dir, "missing")})
	h.expectError(1, "not_found")
	h.sendJSON(proto.Get, 2, map[string]interface{}{"path": dir})
	h.expectError(2, "is_directory")
	h.sendJSON(proto.Put, 3, map[string]interface{}{"path": dir, "mode": 0o644})
	h.expectError(3, "is_directory")
	h.send(proto.Data, 3, []byte("ignored")) // the stream is over
	h.sendJSON(proto.Put, 4, map[string]interface{}{"path": filepath.Join(dir, "no", "parent")})
	h.expectError(4, "not_found")
	h.sendJSON(proto.Put, 5, map[string]interface{}{"path": "relative/path"})
	h.expectError(5, "invalid")

	// A PUT cut short by the end of the session leaves no temporary file.
	h.sendJSON(proto.Put, 6, map[string]interface{}{"path": filepath.Join(dir, "partial")})
	h.send(proto.Data, 6, []byte("half"))
	h.send(proto.Ping, 0, nil)
	h.expect(proto.Pong, 0)
	h.close()
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
}

func TestFileErrKind(t *testing.T) {
	cases := map[error]string{
		syscall.ENOENT: "not_found", syscall.ENOTDIR: "not_found", syscall.EISDIR: "is_directory",
		syscall.EACCES: "permission", syscall.EROFS: "permission", syscall.ENOSPC: "io",
		&os.PathError{Op: "open", Path: "/x", Err: syscall.EPERM}: "permission",
	}
	for err, want := range cases {
		if got := fileErrKind(err); got != want {
			t.Errorf("%v: %s, want %s", err, got, want)
		}
	}
}
