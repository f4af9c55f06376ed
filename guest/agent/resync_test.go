package main

import (
	"bytes"
	"encoding/binary"
	"microbox/proto"
	"testing"
	"time"
)

// A host client killed in the middle of a frame leaves its first part in the
// port; the next host's bytes follow without a disconnect being seen.

func tornExec(h *testHost, missing int) {
	h.t.Helper()
	payload := []byte(`{"argv":["sh","-c","echo this frame never ends"]}`)
	frame := encodeFrame(proto.Exec, 9, append(payload, bytes.Repeat([]byte(" "), missing)...))
	if _, err := h.conn.Write(frame[:headerSize+len(payload)]); err != nil {
		h.t.Fatal(err)
	}
}

func shortGap(t *testing.T) {
	old := frameGap
	frameGap = 200 * time.Millisecond
	t.Cleanup(func() { frameGap = old })
}

func helloFrom(h *testHost, session string) {
	h.t.Helper()
	h.sendJSON(proto.Hello, 0, map[string]interface{}{"version": 1, "session": session})
}

func expectReply(h *testHost, session string) {
	h.t.Helper()
	if m := decodeMap(h.t, h.expect(proto.HelloReply, 0).Payload); m["session"] != session {
		h.t.Fatalf("HELLO_REPLY %v, want session %q", m, session)
	}
}

// The new host's HELLO disappears into the torn frame's payload; the frame
// never completes, the gap ends it, and the hunt finds the HELLO inside it.
func TestTornFrameSwallowsTheNextHello(t *testing.T) {
	shortGap(t)
	h := newHost(t)
	h.hello()
	tornExec(h, 4000)
	helloFrom(h, "second")
	h.expectError(0, "protocol")
	expectReply(h, "second")
	h.send(proto.Ping, 1, []byte("ok"))
	if f := h.expect(proto.Pong, 1); string(f.Payload) != "ok" {
		t.Fatalf("PONG %q", f.Payload)
	}
}

// The new host's HELLO completes the torn frame: its start is lost, the rest
// breaks the framing, and the host's second HELLO (sent on the ERROR) is found.
func TestTornFrameCompletedByTheNextHello(t *testing.T) {
	shortGap(t)
	h := newHost(t)
	h.hello()
	tornExec(h, 20)
	helloFrom(h, "eaten")
	h.expectError(0, "protocol")
	helloFrom(h, "again")
	expectReply(h, "again")
}

// A stalled frame ends the session and kills its processes, as EOF would.
func TestStalledFrameEndsTheSession(t *testing.T) {
	shortGap(t)
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"sleep", "100"}})
	pid := h.started(1)
	h.conn.Write([]byte{0, 0, 0})
	h.expectError(0, "protocol")
	waitGone(t, pid)
}

func TestProtocolErrorThenNewHost(t *testing.T) {
	h := newHost(t)
	h.hello()
	h.conn.Write([]byte{0, 0, 0, 5, 0x42, 0, 0, 0, 1}) // unknown type
	h.expectError(0, "protocol")
	h.send(proto.Ping, 0, []byte("p")) // ignored: no session until a HELLO
	helloFrom(h, "next")
	expectReply(h, "next")
}

func TestHunterFindsHelloSplitAnywhere(t *testing.T) {
	junk := []byte("\x00\x00\x00\x07\x01\x00\x00\x00\x00{}xx\x01\x00\x00\x00\x00")
	hello := encodeFrame(proto.Hello, 0, []byte(`{"version":1,"session":"s"}`))
	after := encodeFrame(proto.Ping, 3, []byte("after"))
	stream := append(append(append([]byte(nil), junk...), hello...), after...)
	for step := 1; step <= len(stream); step++ {
		var hu hunter
		var got Frame
		var rest []byte
		found := false
		for off := 0; off < len(stream) && !found; off += step {
			end := off + step
			if end > len(stream) {
				end = len(stream)
			}
			got, rest, found = hu.feed(stream[off:end])
			if found {
				rest = append(rest, stream[end:]...)
			}
		}
		if !found || !bytes.Equal(encodeFrame(got.Type, got.Stream, got.Payload), hello) {
			t.Fatalf("step %d: found=%v frame %q", step, found, got.Payload)
		}
		if !bytes.Equal(rest, after) {
			t.Fatalf("step %d: rest %q", step, rest)
		}
	}
}

func TestHunterRejectsLookalikes(t *testing.T) {
	cases := [][]byte{
		encodeFrame(proto.Hello, 1, []byte(`{"version":1,"session":"s"}`)),  // not stream 0
		encodeFrame(proto.Hello, 0, []byte(`{"version":1}`)),                // no session
		encodeFrame(proto.Hello, 0, []byte(`{"version":1,"session":"s"}x`)), // trailing bytes
		encodeFrame(proto.HelloReply, 0, []byte(`{"version":1,"session":"s"}`)),
	}
	for _, c := range cases {
		var hu hunter
		if _, _, ok := hu.feed(c); ok {
			t.Fatalf("took %q for a HELLO", c)
		}
	}
}

// Whatever garbage arrives, the hunter keeps at most one HELLO's worth.
func TestHunterStaysSmall(t *testing.T) {
	var hu hunter
	bogus := make([]byte, headerSize)
	binary.BigEndian.PutUint32(bogus, 5+maxHello)
	bogus[4] = proto.Hello
	for i := 0; i < 2000; i++ {
		hu.feed(bogus)
		hu.feed(bytes.Repeat([]byte{0xff}, 1000))
	}
	if len(hu.buf) > maxHello+2*headerSize+1000 {
		t.Fatalf("hunter holds %d bytes", len(hu.buf))
	}
}
