package main

import (
	"encoding/json"
	"io"
	"microbox/proto"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"
)

const testTimeout = 15 * time.Second

func TestMain(m *testing.M) {
	startReaper()
	os.Exit(m.Run())
}

// testHost is the host side of one session over a socketpair.
type testHost struct {
	t      *testing.T
	a      *Agent
	fd     int
	conn   *os.File
	frames chan Frame
	done   chan error

	mu        sync.Mutex
	clock     []int64
	hostnames []string
	entropy   [][]byte
	machineID []string
	closed    bool
}

func newHost(t *testing.T) *testHost { return newHostPort(t, false) }

// newHostPort: with virtio the agent side treats the socketpair like a
// virtio port (POLLHUP means the host is gone).
func newHostPort(t *testing.T, virtio bool) *testHost {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	null, err := syscall.Open("/dev/null", syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := &testHost{t: t, fd: fds[1], frames: make(chan Frame, 1024), done: make(chan error, 1)}
	h.a = &Agent{
		Reaper:     startReaper(),
		PasswdPath: "/etc/passwd",
		GroupPath:  "/etc/group",
		ConsoleFd:  null,
		SetClock: func(ns int64) error {
			h.mu.Lock()
			h.clock = append(h.clock, ns)
			h.mu.Unlock()
			return nil
		},
		SetHostname: func(n string) error {
			h.mu.Lock()
			h.hostnames = append(h.hostnames, n)
			h.mu.Unlock()
			return nil
		},
		AddEntropy: func(b []byte) error {
			h.mu.Lock()
			h.entropy = append(h.entropy, append([]byte(nil), b...))
			h.mu.Unlock()
			return nil
		},
		SetMachineID: func(id string) error {
			h.mu.Lock()
			h.machineID = append(h.machineID, id)
			h.mu.Unlock()
			return nil
		},
		Shutdown: func(s *Session, stream uint32) { s.finish(stream, proto.Done, doneJSON) },
		Logf:     t.Logf,
	}
	port := newPort(fds[0], "test", virtio)
	go func() {
		h.done <- h.a.ServeSession(port)
		syscall.Close(fds[0])
		syscall.Close(null)
	}()
	syscall.SetNonblock(fds[1], true)
	h.conn = os.NewFile(uintptr(fds[1]), "host")
	go func() {
		var d Decoder
		buf := make([]byte, 128*1024)
		defer close(h.frames)
		for {
			n, err := h.conn.Read(buf)
			if n > 0 {
				fs, derr := d.Feed(buf[:n])
				if derr != nil {
					t.Errorf("host decoder: %v", derr)
					return
				}
				for _, f := range fs {
					h.frames <- f
				}
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(h.close)
	return h
}

// close disconnects the host and waits for the session to end.
func (h *testHost) close() {
	h.mu.Lock()
	closed := h.closed
	h.closed = true
	h.mu.Unlock()
	if closed {
		return
	}
	h.conn.Close()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("ServeSession: %v", err)
		}
	case <-time.After(testTimeout):
		h.t.Error("session did not end after the host disconnected")
	}
}

func (h *testHost) send(t byte, stream uint32, payload []byte) {
	h.t.Helper()
	if _, err := h.conn.Write(encodeFrame(t, stream, payload)); err != nil {
		h.t.Fatalf("send %s: %v", typeName(t), err)
	}
}

func (h *testHost) sendJSON(t byte, stream uint32, v interface{}) {
	h.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		h.t.Fatal(err)
	}
	h.send(t, stream, b)
}

func (h *testHost) recv() Frame {
	h.t.Helper()
	select {
	case f, ok := <-h.frames:
		if !ok {
			h.t.Fatal("agent closed the channel")
		}
		return f
	case <-time.After(testTimeout):
		h.t.Fatal("timed out waiting for a frame")
	}
	return Frame{}
}

func (h *testHost) expect(t byte, stream uint32) Frame {
	h.t.Helper()
	f := h.recv()
	if f.Type != t || f.Stream != stream {
		h.t.Fatalf("got %s on stream %d (%q), want %s on stream %d",
			typeName(f.Type), f.Stream, f.Payload, typeName(t), stream)
	}
	return f
}

func decodeMap(t *testing.T, b []byte) map[string]interface{} {
	t.Helper()
	var m map[string]interface{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("bad JSON %q: %v", b, err)
	}
	return m
}

func (h *testHost) expectError(stream uint32, kind string) map[string]interface{} {
	h.t.Helper()
	m := decodeMap(h.t, h.expect(proto.Error, stream).Payload)
	if m["kind"] != kind {
		h.t.Fatalf("ERROR %v, want kind %q", m, kind)
	}
	return m
}

func (h *testHost) hello() {
	h.t.Helper()
	h.sendJSON(proto.Hello, 0, map[string]interface{}{"version": 1, "session": "nonce-1", "time_ns": int64(1763790000000000000), "hostname": "box-1"})
	m := decodeMap(h.t, h.expect(proto.HelloReply, 0).Payload)
	if m["session"] != "nonce-1" {
		h.t.Fatalf("HELLO_REPLY %v", m)
	}
}

// endOfSession half-closes the host side and checks that nothing more than
// what was already queued arrives before the agent closes its end.
func (h *testHost) drainToEOF() []Frame {
	h.t.Helper()
	syscall.Shutdown(h.fd, syscall.SHUT_WR)
	var got []Frame
	for {
		select {
		case f, ok := <-h.frames:
			if !ok {
				return got
			}
			got = append(got, f)
		case <-time.After(testTimeout):
			h.t.Fatal("agent did not close its end")
		}
	}
}

func TestHello(t *testing.T) {
	h := newHost(t)
	h.hello()
	h.recvNone()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.clock) != 1 || h.clock[0] != 1763790000000000000 {
		t.Errorf("clock set to %v", h.clock)
	}
	if len(h.hostnames) != 1 || h.hostnames[0] != "box-1" {
		t.Errorf("hostname set to %v", h.hostnames)
	}
}

// recvNone checks that no frame is pending right now.
func (h *testHost) recvNone() bool {
	select {
	case f := <-h.frames:
		h.t.Fatalf("unexpected %s on stream %d: %q", typeName(f.Type), f.Stream, f.Payload)
	case <-time.After(20 * time.Millisecond):
	}
	return true
}

func TestHelloReplyExact(t *testing.T) {
	h := newHost(t)
	h.sendJSON(proto.Hello, 0, map[string]interface{}{"version": 1, "session": "s1"})
	f := h.expect(proto.HelloReply, 0)
	want := `{"version":1,"session":"s1","agent":"microbox-agent 1","capabilities":["exec","tty","signal","files","ping","shutdown","identity","cancel","connect","tar","window","net","dns","tar_export","mounts"]}`
	if string(f.Payload) != want {
		t.Fatalf("HELLO_REPLY %s", f.Payload)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.clock) != 0 || len(h.hostnames) != 0 {
		t.Fatalf("clock/hostname set without time_ns/hostname: %v %v", h.clock, h.hostnames)
	}
}

// The golden HELLO with identity fields: entropy and machine-id are applied
// before the reply, so nothing the host runs afterwards sees the old ones.
func TestHelloAppliesIdentity(t *testing.T) {
	h := newHost(t)
	g := goldenByName(t)["hello_identity"]
	if _, err := h.conn.Write(g); err != nil {
		t.Fatal(err)
	}
	h.expect(proto.HelloReply, 0)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.entropy) != 1 || len(h.entropy[0]) != 32 || h.entropy[0][31] != 31 {
		t.Errorf("entropy %v", h.entropy)
	}
	if len(h.machineID) != 1 || h.machineID[0] != "0123456789abcdef0123456789abcdef" {
		t.Errorf("machine-id %v", h.machineID)
	}
}

func TestHelloRejectsBadIdentity(t *testing.T) {
	for _, body := range []map[string]interface{}{
		{"version": 1, "session": "s", "machine_id": "../../etc/passwd"},
		{"version": 1, "session": "s", "machine_id": "0123456789ABCDEF0123456789ABCDEF"},
		{"version": 1, "session": "s", "entropy": make([]byte, maxEntropy+1)},
	} {
		h := newHost(t)
		h.sendJSON(proto.Hello, 0, body)
		h.expectError(0, "protocol")
		h.mu.Lock()
		if len(h.machineID) != 0 || len(h.entropy) != 0 {
			t.Errorf("applied %v %v from %v", h.machineID, h.entropy, body)
		}
		h.mu.Unlock()
	}
}

func TestWrongVersion(t *testing.T) {
	h := newHost(t)
	h.sendJSON(proto.Hello, 0, map[string]interface{}{"version": 2, "session": "x"})
	h.expectError(0, "version")
	// The agent stops reading the session: a PING gets no PONG.
	h.send(proto.Ping, 0, []byte("p"))
	if got := h.drainToEOF(); len(got) != 0 {
		t.Fatalf("frames after the version error: %v", got)
	}
}

func TestBeforeHello(t *testing.T) {
	h := newHost(t)
	h.send(proto.Ping, 0, []byte("p"))
	h.expectError(0, "protocol")
	// The session is over; the hunt for the next HELLO starts a new one.
	h.sendJSON(proto.Hello, 0, map[string]interface{}{"version": 1, "session": "x"})
	if f := h.expect(proto.HelloReply, 0); !json.Valid(f.Payload) {
		t.Fatalf("HELLO_REPLY %q", f.Payload)
	}
}

func TestPing(t *testing.T) {
	h := newHost(t)
	h.hello()
	payload := []byte{0, 1, 'p', 'i', 'n', 'g'}
	h.send(proto.Ping, 0, payload)
	if f := h.expect(proto.Pong, 0); string(f.Payload) != string(payload) {
		t.Fatalf("PONG %q", f.Payload)
	}
	h.send(proto.Ping, 7, nil)
	if f := h.expect(proto.Pong, 7); len(f.Payload) != 0 {
		t.Fatalf("PONG %q", f.Payload)
	}
	h.send(proto.Ping, 0, make([]byte, 65))
	h.expectError(0, "protocol")
}

func TestProtocolErrors(t *testing.T) {
	cases := map[string]func(h *testHost){
		"malformed JSON":  func(h *testHost) { h.send(proto.Exec, 1, []byte(`{"argv":`)) },
		"JSON not object": func(h *testHost) { h.send(proto.Exec, 1, []byte(`["sh"]`)) },
		"exec on 0":       func(h *testHost) { h.sendJSON(proto.Exec, 0, map[string]interface{}{"argv": []string{"true"}}) },
		"guest type":      func(h *testHost) { h.send(proto.Stdout, 1, []byte("x")) },
		"oversize frame": func(h *testHost) {
			h.conn.Write([]byte{0, 0x10, 0, 6, proto.Data, 0, 0, 0, 1})
		},
		"unknown type": func(h *testHost) { h.conn.Write([]byte{0, 0, 0, 5, 0x42, 0, 0, 0, 1}) },
	}
	for name, fn := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHost(t)
			h.hello()
			fn(h)
			h.expectError(0, "protocol")
			h.send(proto.Ping, 0, []byte("p"))
			if got := h.drainToEOF(); len(got) != 0 {
				t.Fatalf("frames after the protocol error: %v", got)
			}
		})
	}
}

func TestStreamInUse(t *testing.T) {
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"sleep", "100"}})
	pid := h.started(1)
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"true"}})
	h.expectError(0, "protocol")
	// A protocol error ends the session: its processes are killed.
	waitGone(t, pid)
}

func TestShutdownHook(t *testing.T) {
	h := newHost(t)
	h.hello()
	h.send(proto.Shutdown, 4, []byte("{}"))
	if f := h.expect(proto.Done, 4); string(f.Payload) != "{}" {
		t.Fatalf("DONE %q", f.Payload)
	}
}

// waitGone waits until pid no longer exists (killed and reaped).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for syscall.Kill(pid, 0) != syscall.ESRCH {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still exists", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHelloFromNewHost(t *testing.T) {
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"sleep", "100"}})
	pid := h.started(1)
	// A HELLO inside a session means the old host left unnoticed: its
	// processes die, its output is dropped, and a new session starts.
	h.sendJSON(proto.Hello, 0, map[string]interface{}{"version": 1, "session": "s2"})
	if m := decodeMap(t, h.expect(proto.HelloReply, 0).Payload); m["session"] != "s2" {
		t.Fatalf("HELLO_REPLY %v", m)
	}
	waitGone(t, pid)
	h.run(1, argv("true")).wantExit(t, 0, nil, false) // stream ids start afresh
	h.send(proto.Ping, 0, nil)
	h.expect(proto.Pong, 0)
}

func TestHostGoneWhileStdinFull(t *testing.T) {
	h := newHostPort(t, true)
	h.hello()
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"sleep", "100"}, "stdin": true})
	pid := h.started(1)
	// More than the queue holds: the port reader blocks in the queue.
	go func() {
		chunk := make([]byte, 1<<20)
		for i := 0; i < queueLimit>>20+2; i++ {
			if _, err := h.conn.Write(encodeFrame(proto.Stdin, 1, chunk)); err != nil {
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	h.close() // must not hang: the blocked reader notices the host left
	waitGone(t, pid)
}

func TestPortHostGone(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := newPort(fds[0], "t", true)
	defer syscall.Close(fds[0])
	if !p.hostConnected() {
		t.Fatal("host reported gone while connected")
	}
	big := encodeFrame(proto.Data, 1, make([]byte, 100*1024))
	go func() {
		b := make([]byte, 1<<20)
		for n := 0; n < len(big); {
			m, err := syscall.Read(fds[1], b)
			if err != nil || m == 0 {
				return
			}
			n += m
		}
		syscall.Close(fds[1])
	}()
	if err := p.writeFrame(big); err != nil {
		t.Fatalf("writeFrame: %v", err)
	}
	deadline := time.Now().Add(testTimeout)
	for p.hostConnected() {
		if time.Now().After(deadline) {
			t.Fatal("POLLHUP not seen after the peer closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.writeFrame(big); err != errHostGone {
		t.Fatalf("writeFrame without a host: %v", err)
	}
	if _, err := p.read(); err != io.EOF {
		t.Fatalf("read without a host: %v", err)
	}
}

// The port loop sleeps until SIGIO: check that F_SETOWN + O_ASYNC deliver it
// to a signal.Notify channel (here on a socket, which raises SIGIO on input).
func TestAsyncSignal(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGIO)
	defer signal.Stop(ch)
	if _, err := fcntl(fds[0], syscall.F_SETOWN, os.Getpid()); err != nil {
		t.Fatal(err)
	}
	setAsync(fds[0], true)
	syscall.Write(fds[1], []byte("x"))
	select {
	case <-ch:
	case <-time.After(testTimeout):
		t.Fatal("no SIGIO")
	}
	setAsync(fds[0], false)
	if fl, _ := fcntl(fds[0], syscall.F_GETFL, 0); fl&syscall.O_ASYNC != 0 {
		t.Fatal("O_ASYNC still set")
	}
}
