package main

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"microbox/proto"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// listen starts a TCP server on 127.0.0.1 that runs serve for each
// connection; it returns the port.
func listen(t *testing.T, serve func(c *net.TCPConn)) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serve(c.(*net.TCPConn))
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// readData collects DATA payloads of stream up to the empty one.
func (h *testHost) readData(stream uint32) []byte {
	h.t.Helper()
	var got bytes.Buffer
	for {
		f := h.expect(proto.Data, stream)
		if len(f.Payload) == 0 {
			return got.Bytes()
		}
		if len(f.Payload) > chunkSize {
			h.t.Fatalf("DATA of %d bytes", len(f.Payload))
		}
		got.Write(f.Payload)
	}
}

func (h *testHost) sendChunks(t byte, stream uint32, b []byte) {
	h.t.Helper()
	for off := 0; off < len(b); off += chunkSize {
		end := off + chunkSize
		if end > len(b) {
			end = len(b)
		}
		h.send(t, stream, b[off:end])
	}
}

func TestConnectEcho(t *testing.T) {
	port := listen(t, func(c *net.TCPConn) {
		io.Copy(c, c) // echo until the host's end of input
		c.CloseWrite()
	})
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Connect, 1, map[string]interface{}{"port": port})
	if f := h.expect(proto.Connected, 1); string(f.Payload) != "{}" {
		t.Fatalf("CONNECTED %q", f.Payload)
	}
	// More than the queue holds, both ways, while the host reads.
	content := make([]byte, queueLimit+3*chunkSize+5)
	rand.New(rand.NewSource(2)).Read(content)
	done := make(chan []byte, 1)
	go func() { // a failed check in readData ends this goroutine: deliver anyway
		var got []byte
		defer func() { done <- got }()
		got = h.readData(1)
	}()
	h.sendChunks(proto.Data, 1, content)
	h.send(proto.Data, 1, nil)
	if got := <-done; !bytes.Equal(got, content) {
		t.Fatalf("echoed %d bytes, sent %d", len(got), len(content))
	}
	if f := h.expect(proto.Done, 1); string(f.Payload) != "{}" {
		t.Fatalf("DONE %q", f.Payload)
	}
}

// The server ends its side first; the host still sends after that.
func TestConnectGuestEndsFirst(t *testing.T) {
	got := make(chan string, 1)
	port := listen(t, func(c *net.TCPConn) {
		c.Write([]byte("banner"))
		c.CloseWrite()
		b, _ := io.ReadAll(c)
		got <- string(b)
		c.Close()
	})
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Connect, 1, map[string]interface{}{"port": port, "host": "127.0.0.1"})
	h.send(proto.Data, 1, []byte("early ")) // before CONNECTED: queued
	h.expect(proto.Connected, 1)
	if b := h.readData(1); string(b) != "banner" {
		t.Fatalf("read %q", b)
	}
	h.send(proto.Data, 1, []byte("late"))
	h.send(proto.Data, 1, nil)
	h.expect(proto.Done, 1)
	if s := <-got; s != "early late" {
		t.Fatalf("server read %q", s)
	}
}

func TestConnectErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	free := l.Addr().(*net.TCPAddr).Port
	l.Close()
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Connect, 1, map[string]interface{}{"port": free})
	if m := h.expectError(1, "refused"); !strings.Contains(m["message"].(string), "connection refused") {
		t.Fatalf("ERROR %v", m)
	}
	h.send(proto.Data, 1, []byte("ignored"))
	for i, req := range []map[string]interface{}{
		{}, {"port": 0}, {"port": 65536}, {"port": "80"}, {"port": 80, "host": "localhost"},
		{"port": 80, "host": "127.0.0.1:80"},
	} {
		h.sendJSON(proto.Connect, uint32(2+i), req)
		h.expectError(uint32(2+i), "invalid")
	}
	h.send(proto.Ping, 0, nil)
	h.expect(proto.Pong, 0)
}

func TestDialFailure(t *testing.T) {
	cases := map[string]error{
		"connection refused": &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)},
		"unreachable":        &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)},
		"timed out after":    &net.OpError{Op: "dial", Err: timeoutErr{}},
	}
	for want, err := range cases {
		if got := dialFailure(err); !strings.HasPrefix(got, want) {
			t.Errorf("%v: %q, want %q", err, got, want)
		}
	}
	if got := dialFailure(errors.New("x")); got != "x" {
		t.Errorf("%q", got)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// CANCEL and the end of the session close the connection.
func TestConnectCancelAndSessionEnd(t *testing.T) {
	closed := make(chan error, 2)
	port := listen(t, func(c *net.TCPConn) {
		c.Write([]byte("hi"))
		_, err := io.ReadAll(c)
		closed <- err
		c.Close()
	})
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Connect, 1, map[string]interface{}{"port": port})
	h.expect(proto.Connected, 1)
	if f := h.expect(proto.Data, 1); string(f.Payload) != "hi" {
		t.Fatalf("DATA %q", f.Payload)
	}
	h.send(proto.Cancel, 1, []byte("{}"))
	h.expectError(1, "cancelled")
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("server: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("connection still open after CANCEL")
	}
	h.sendJSON(proto.Connect, 2, map[string]interface{}{"port": port})
	h.expect(proto.Connected, 2)
	h.expect(proto.Data, 2)
	h.close()
	select {
	case <-closed:
	case <-time.After(testTimeout):
		t.Fatal("connection still open after the session ended")
	}
}

// The server resets the connection: the stream ends with ERROR.
func TestConnectReset(t *testing.T) {
	port := listen(t, func(c *net.TCPConn) {
		c.SetLinger(0)
		c.Read(make([]byte, 1))
		c.Close()
	})
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Connect, 1, map[string]interface{}{"port": port})
	h.expect(proto.Connected, 1)
	h.send(proto.Data, 1, []byte("x"))
	if m := h.expectError(1, "io"); !strings.Contains(m["message"].(string), "reset") {
		t.Fatalf("ERROR %v", m)
	}
}

func TestConnectIPv6(t *testing.T) {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no ::1 here")
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Write([]byte("six"))
			c.Close()
		}
	}()
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Connect, 1, map[string]interface{}{"port": l.Addr().(*net.TCPAddr).Port, "host": "::1"})
	h.expect(proto.Connected, 1)
	if b := h.readData(1); string(b) != "six" {
		t.Fatalf("read %q", b)
	}
	h.send(proto.Data, 1, nil)
	h.expect(proto.Done, 1)
}
