package main

import (
	"microbox/proto"
	"os"
	"path/filepath"
	"testing"
)

func TestCancelExec(t *testing.T) {
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"sleep", "100"}, "stdin": true})
	pid := h.started(1)
	h.send(proto.Cancel, 1, []byte("{}"))
	// The process group is killed; the stream ends with its usual EXIT.
	h.collectFrom(1, pid).wantExit(t, nil, 9, false)
	waitGone(t, pid)
	h.send(proto.Stdin, 1, []byte("late")) // the stream is over: ignored
	h.send(proto.Cancel, 1, []byte("{}"))
	h.send(proto.Ping, 0, nil)
	h.expect(proto.Pong, 0)
}

func TestCancelUnknownDetachedAndFinished(t *testing.T) {
	h := newHost(t)
	h.hello()
	h.send(proto.Cancel, 9, []byte("{}"))
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"true"}, "detach": true})
	h.expect(proto.Exit, 1)
	h.send(proto.Cancel, 1, []byte("{}"))
	h.run(2, argv("true")).wantExit(t, 0, nil, false)
	h.send(proto.Cancel, 2, []byte("{}"))
	h.send(proto.Cancel, 0, []byte("{}"))
	h.send(proto.Ping, 0, nil)
	h.expect(proto.Pong, 0)
	h.recvNone()
}

func TestCancelPut(t *testing.T) {
	dir := t.TempDir()
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Put, 2, map[string]interface{}{"path": filepath.Join(dir, "f")})
	h.send(proto.Data, 2, []byte("half"))
	h.send(proto.Cancel, 2, []byte("{}"))
	h.expectError(2, "cancelled")
	h.send(proto.Data, 2, nil) // ignored: no DONE, no file
	h.send(proto.Ping, 0, nil)
	h.expect(proto.Pong, 0)
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
}

func TestCancelGet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(path, make([]byte, 64<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Get, 3, map[string]interface{}{"path": path})
	h.expect(proto.File, 3)
	h.expect(proto.Data, 3)
	h.send(proto.Cancel, 3, []byte("{}"))
	got := 0
	for {
		f := h.recv()
		if f.Stream != 3 {
			t.Fatalf("%s on stream %d", typeName(f.Type), f.Stream)
		}
		if f.Type == proto.Error {
			if m := decodeMap(t, f.Payload); m["kind"] != "cancelled" {
				t.Fatalf("ERROR %v", m)
			}
			break
		}
		if f.Type != proto.Data || len(f.Payload) == 0 {
			t.Fatalf("%s %d bytes before the ERROR", typeName(f.Type), len(f.Payload))
		}
		got += len(f.Payload)
	}
	if got >= 63<<20 {
		t.Fatalf("%d bytes sent after CANCEL", got)
	}
	// Nothing of stream 3 follows its ERROR.
	h.send(proto.Ping, 0, nil)
	h.expect(proto.Pong, 0)
	h.recvNone()
}
