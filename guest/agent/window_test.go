package main

import (
	"bytes"
	"encoding/binary"
	"microbox/proto"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func (h *testHost) helloWindow(n int) {
	h.t.Helper()
	h.sendJSON(proto.Hello, 0, map[string]interface{}{"version": 1, "session": "w", "window": n})
	h.expect(proto.HelloReply, 0)
}

func (h *testHost) grant(stream uint32, n uint32) {
	h.t.Helper()
	h.send(proto.Window, stream, windowPayload(n))
}

// quiet checks that nothing arrives for a while (a stream waiting for credit).
func (h *testHost) quiet(d time.Duration) {
	h.t.Helper()
	select {
	case f := <-h.frames:
		h.t.Fatalf("unexpected %s on stream %d (%d bytes)", typeName(f.Type), f.Stream, len(f.Payload))
	case <-time.After(d):
	}
}

// A stream without credit waits alone: another stream of the session runs
// to its end meanwhile, and the first one goes on once credit comes.
func TestWindowStalledStreamDoesNotStopOthers(t *testing.T) {
	h := newHost(t)
	h.helloWindow(1000)
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"head", "-c", "5000", "/dev/zero"}})
	h.started(1)
	got := 0
	for got < 1000 {
		f := h.expect(proto.Stdout, 1)
		got += len(f.Payload)
	}
	if got != 1000 {
		t.Fatalf("%d bytes sent on a window of 1000", got)
	}
	h.quiet(200 * time.Millisecond)

	// Stream 2, on the same session, is not held up by stream 1.
	r := h.run(2, argv("sh", "-c", "echo other; exit 3"))
	r.wantExit(t, 3, nil, false)
	if r.stdout.String() != "other\n" {
		t.Fatalf("stdout %q", r.stdout.String())
	}
	h.send(proto.Window, 99, windowPayload(5)) // unknown stream: ignored
	h.send(proto.Ping, 0, nil)
	h.expect(proto.Pong, 0)

	h.grant(1, 2500)
	for got < 3500 {
		got += len(h.expect(proto.Stdout, 1).Payload)
	}
	h.quiet(100 * time.Millisecond)
	h.grant(1, 1<<20)
	r = h.collectFrom(1, 1)
	r.wantExit(t, 0, nil, false)
	if got+r.stdout.Len() != 5000 {
		t.Fatalf("%d bytes in all", got+r.stdout.Len())
	}
}

// Host bytes: the host may send its window at once (the port reader never
// waits), and gets credit back as the process reads, in batches of N/4.
func TestWindowGrantsStdin(t *testing.T) {
	h := newHost(t)
	h.helloWindow(4096)
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"sh", "-c", "read x; cat >/dev/null"}, "stdin": true})
	h.started(1)
	h.send(proto.Stdin, 1, bytes.Repeat([]byte("a"), 1000))
	h.quiet(200 * time.Millisecond) // 1000 < 4096/4: no grant yet
	h.send(proto.Stdin, 1, append(bytes.Repeat([]byte("b"), 3095), '\n'))
	granted := 0
	for granted < 4096 {
		f := h.expect(proto.Window, 1)
		if len(f.Payload) != 4 {
			t.Fatalf("WINDOW payload %x", f.Payload)
		}
		n := int(binary.BigEndian.Uint32(f.Payload))
		if n < 1024 {
			t.Fatalf("grant of %d bytes, batches are at least 1024", n)
		}
		granted += n
	}
	if granted != 4096 {
		t.Fatalf("granted %d for 4096 bytes", granted)
	}
	h.send(proto.Stdin, 1, make([]byte, 4096))
	h.send(proto.Stdin, 1, nil)
	for {
		f := h.recv()
		if f.Type == proto.Exit {
			break
		}
		if f.Type != proto.Window {
			t.Fatalf("%s", typeName(f.Type))
		}
	}
}

// A process that does not read its stdin holds only its own stream.
func TestWindowUnreadStdinHoldsOnlyItsStream(t *testing.T) {
	const window = 64 << 10
	h := newHost(t)
	h.helloWindow(window)
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"sleep", "100"}, "stdin": true})
	pid := h.started(1)
	// The pipe takes a window's worth (64 KiB) and that is granted back...
	for i := 0; i < 4; i++ {
		h.send(proto.Stdin, 1, make([]byte, window/4))
	}
	for granted := 0; granted < window; {
		granted += int(binary.BigEndian.Uint32(h.expect(proto.Window, 1).Payload))
	}
	// ...the next window's worth waits in the queue, not in the port reader.
	for i := 0; i < 4; i++ {
		h.send(proto.Stdin, 1, make([]byte, window/4))
	}
	h.run(2, argv("true")).wantExit(t, 0, nil, false)
	h.quiet(100 * time.Millisecond)
	// Past the window: a protocol error, the session ends.
	h.send(proto.Stdin, 1, []byte("x"))
	h.expectError(0, "protocol")
	waitGone(t, pid)
}

// CANCEL and the end of the session release a producer waiting for credit.
func TestWindowCancelStalledExec(t *testing.T) {
	h := newHost(t)
	h.helloWindow(10)
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"sh", "-c", "echo 0123456789abcdef; sleep 100"}})
	pid := h.started(1)
	if f := h.expect(proto.Stdout, 1); string(f.Payload) != "0123456789" {
		t.Fatalf("STDOUT %q", f.Payload)
	}
	h.send(proto.Cancel, 1, []byte("{}"))
	h.collectFrom(1, pid).wantExit(t, nil, 9, false)

	h.sendJSON(proto.Get, 2, map[string]interface{}{"path": "/proc/self/status"})
	h.expect(proto.File, 2)
	h.expect(proto.Data, 2)
	h.send(proto.Cancel, 2, []byte("{}"))
	h.expectError(2, "cancelled")

	h.sendJSON(proto.Exec, 3, map[string]interface{}{"argv": []string{"sh", "-c", "yes; sleep 100"}})
	pid = h.started(3)
	h.expect(proto.Stdout, 3)
	h.close()
	waitGone(t, pid)
}

func TestWindowFilesTarAndConnect(t *testing.T) {
	dir := t.TempDir()
	content := bytes.Repeat([]byte("0123456789"), 1000)
	path := filepath.Join(dir, "f")
	os.WriteFile(path, content, 0o644)
	h := newHost(t)
	h.helloWindow(3000)

	// GET: 3000 bytes, then nothing until WINDOW.
	h.sendJSON(proto.Get, 1, map[string]interface{}{"path": path})
	h.expect(proto.File, 1)
	var got []byte
	for len(got) < 3000 {
		got = append(got, h.expect(proto.Data, 1).Payload...)
	}
	h.quiet(100 * time.Millisecond)
	h.grant(1, 1<<30)
	got = append(got, h.readData(1)...)
	if !bytes.Equal(got, content) {
		t.Fatalf("GET %d bytes", len(got))
	}

	// TAR_GET: the same.
	h.sendJSON(proto.TarGet, 2, map[string]interface{}{"path": path})
	var raw []byte
	for len(raw) < 3000 {
		raw = append(raw, h.expect(proto.Data, 2).Payload...)
	}
	h.quiet(100 * time.Millisecond)
	h.grant(2, 1<<30)
	if len(raw) != 3000 {
		t.Fatalf("TAR_GET sent %d bytes on a window of 3000", len(raw))
	}
	raw = append(raw, h.readData(2)...)
	h.expect(proto.Done, 2)
	if es := readTar(t, raw); len(es) != 1 || !bytes.Equal(es[0].data, content) {
		t.Fatalf("TAR_GET: %d entries", len(es))
	}

	// PUT: grants come as the file is written.
	h.sendJSON(proto.Put, 3, map[string]interface{}{"path": filepath.Join(dir, "g")})
	h.send(proto.Data, 3, content[:3000])
	if f := h.expect(proto.Window, 3); binary.BigEndian.Uint32(f.Payload) != 3000 {
		t.Fatalf("WINDOW %x", f.Payload)
	}
	h.send(proto.Data, 3, content[3000:6000])
	h.expect(proto.Window, 3)
	h.send(proto.Data, 3, nil)
	h.expect(proto.Done, 3)

	// CONNECT: an echo server, credit both ways.
	port := listen(t, func(c *net.TCPConn) {
		buf := make([]byte, 100)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				c.Write(buf[:n])
			}
			if err != nil {
				c.CloseWrite()
				return
			}
		}
	})
	h.sendJSON(proto.Connect, 4, map[string]interface{}{"port": port})
	h.expect(proto.Connected, 4)
	h.send(proto.Data, 4, content[:3000])
	var echoed, granted int
	for echoed < 3000 || granted < 3000 {
		f := h.recv()
		switch f.Type {
		case proto.Data:
			echoed += len(f.Payload)
		case proto.Window:
			granted += int(binary.BigEndian.Uint32(f.Payload))
		default:
			t.Fatalf("%s", typeName(f.Type))
		}
	}
	// Out of credit, the guest's end of file still comes through.
	h.send(proto.Data, 4, nil)
	if f := h.expect(proto.Data, 4); len(f.Payload) != 0 {
		t.Fatalf("DATA %q past the window", f.Payload)
	}
	h.expect(proto.Done, 4)
}

// A process that exits with its output stream out of credit ends its stream.
func TestWindowExitWithoutCredit(t *testing.T) {
	h := newHost(t)
	h.helloWindow(3)
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"echo", "hi"}})
	h.started(1)
	if f := h.expect(proto.Stdout, 1); string(f.Payload) != "hi\n" {
		t.Fatalf("STDOUT %q", f.Payload)
	}
	h.expect(proto.Exit, 1)
	// With more output than credit, the rest comes as credit does.
	h.sendJSON(proto.Exec, 2, map[string]interface{}{"argv": []string{"echo", "hello"}})
	h.started(2)
	if f := h.expect(proto.Stdout, 2); string(f.Payload) != "hel" {
		t.Fatalf("STDOUT %q", f.Payload)
	}
	h.quiet(100 * time.Millisecond)
	h.grant(2, 1)
	if f := h.expect(proto.Stdout, 2); string(f.Payload) != "l" {
		t.Fatalf("STDOUT %q", f.Payload)
	}
	h.grant(2, 100)
	r := h.collectFrom(2, 1)
	r.wantExit(t, 0, nil, false)
	if r.stdout.String() != "o\n" {
		t.Fatalf("STDOUT %q", r.stdout.String())
	}
}

func TestWindowBadFrames(t *testing.T) {
	h := newHost(t)
	h.sendJSON(proto.Hello, 0, map[string]interface{}{"version": 1, "session": "s", "window": -1})
	h.expectError(0, "protocol")
	h.sendJSON(proto.Hello, 0, map[string]interface{}{"version": 1, "session": "s", "window": maxWindow + 1})
	h.expectError(0, "protocol")
	h.hello()
	h.send(proto.Window, 1, []byte{1, 2, 3})
	h.expectError(0, "protocol")
}

// Without a window, WINDOW frames change nothing.
func TestWindowOffIgnoresWindow(t *testing.T) {
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"head", "-c", "300000", "/dev/zero"}})
	h.send(proto.Window, 1, windowPayload(1))
	r := h.collect(1)
	r.wantExit(t, 0, nil, false)
	if r.stdout.Len() != 300000 {
		t.Fatalf("%d bytes", r.stdout.Len())
	}
}
