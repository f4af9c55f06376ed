package main

// The shim against a fake agent on a Unix socket: clients' stream ids are
// their own, a departed client's streams are cancelled, output is granted
// back as it is written, and a client that stops reading stalls nobody else.

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"microbox/proto"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeAgent accepts one port connection and answers HELLO; every later frame
// goes to `got`; `send` writes frames to the shim.
type fakeAgent struct {
	got       chan Frame
	conn      net.Conn
	waitReady chan struct{}
}

func startFake(t *testing.T, path string, caps []string) *fakeAgent {
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	fa := &fakeAgent{got: make(chan Frame, 1024)}
	ready := make(chan struct{})
	go func() {
		conn, err := ln.Accept()
		ln.Close()
		if err != nil {
			return
		}
		fa.conn = conn
		r := bufio.NewReader(conn)
		hdr := make([]byte, headerSize)
		all := union(fromClient, map[byte]bool{proto.Window: true})
		hello, err := readFrame(r, hdr, all)
		if err != nil {
			return
		}
		var h map[string]interface{}
		_ = json.Unmarshal(hello.Payload, &h)
		conn.Write(encodeJSON(proto.HelloReply, 0, helloReply{Version: 1, Session: h["session"].(string),
			Agent: "fake 1", Capabilities: caps}))
		close(ready)
		for {
			f, err := readFrame(r, hdr, all)
			if err != nil {
				close(fa.got)
				return
			}
			fa.got <- f
		}
	}()
	fa.waitReady = ready
	return fa
}

func (fa *fakeAgent) next(t *testing.T, skip byte) Frame {
	for {
		select {
		case f := <-fa.got:
			if f.Type == skip {
				continue
			}
			return f
		case <-time.After(5 * time.Second):
			t.Fatal("the fake agent got nothing")
		}
	}
}

type testClient struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialClient(t *testing.T, path string) *testClient {
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c := &testClient{conn: conn, r: bufio.NewReader(conn)}
	conn.Write(encodeJSON(proto.Hello, 0, map[string]interface{}{"version": 1, "session": "s1"}))
	if f := c.read(t); f.Type != proto.HelloReply {
		t.Fatalf("got type %x, want HELLO_REPLY", f.Type)
	}
	return c
}

func (c *testClient) read(t *testing.T) Frame {
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := readFrame(c.r, make([]byte, headerSize), union(fromGuest, fromClient))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func newTestShim(t *testing.T, caps []string) (*shim, *fakeAgent, string) {
	dir := t.TempDir()
	fa := startFake(t, filepath.Join(dir, "port0.sock"), caps)
	p, err := openPort(filepath.Join(dir, "port0.sock"), 64*1024)
	if err != nil {
		t.Fatal(err)
	}
	<-fa.waitReady
	s := &shim{dir: dir, first: p, ports: []*port{p}, ended: make(chan error, 1)}
	s.serve(p)
	mux := filepath.Join(dir, "mux.sock")
	if s.mux, err = net.Listen("unix", mux); err != nil {
		t.Fatal(err)
	}
	go s.accept()
	t.Cleanup(func() { s.mux.Close(); p.conn.Close() })
	return s, fa, mux
}

func TestStreamsAreEachClientsOwn(t *testing.T) {
	_, fa, mux := newTestShim(t, []string{"exec", "cancel", "window"})
	a, b := dialClient(t, mux), dialClient(t, mux)
	a.conn.Write(encode(proto.Exec, 1, []byte(`{"argv":["a"]}`)))
	ea := fa.next(t, 0)
	b.conn.Write(encode(proto.Exec, 1, []byte(`{"argv":["b"]}`)))
	eb := fa.next(t, 0)
	if ea.Stream == eb.Stream || string(eb.Payload) != `{"argv":["b"]}` {
		t.Fatalf("both clients' stream 1 became port stream %d/%d", ea.Stream, eb.Stream)
	}
	fa.conn.Write(encode(proto.Stdout, eb.Stream, []byte("for b")))
	fa.conn.Write(encode(proto.Stdout, ea.Stream, []byte("for a")))
	if f := b.read(t); f.Stream != 1 || string(f.Payload) != "for b" {
		t.Fatalf("b got %q on %d", f.Payload, f.Stream)
	}
	if f := a.read(t); f.Stream != 1 || string(f.Payload) != "for a" {
		t.Fatalf("a got %q on %d", f.Payload, f.Stream)
	}
	// a leaves: its stream is cancelled, b's is not
	a.conn.Close()
	if f := fa.next(t, proto.Window); f.Type != proto.Cancel || f.Stream != ea.Stream {
		t.Fatalf("after a left the agent got type %x on %d, want CANCEL on %d", f.Type, f.Stream, ea.Stream)
	}
	fa.conn.Write(encodeJSON(proto.Exit, eb.Stream, map[string]int{"code": 0}))
	if f := b.read(t); f.Type != proto.Exit || f.Stream != 1 {
		t.Fatalf("b got type %x", f.Type)
	}
}

func TestAStalledClientStallsNobodyElse(t *testing.T) {
	_, fa, mux := newTestShim(t, []string{"exec", "cancel", "window"})
	slow, fast := dialClient(t, mux), dialClient(t, mux)
	slow.conn.Write(encode(proto.Exec, 1, []byte(`{}`)))
	es := fa.next(t, 0)
	fast.conn.Write(encode(proto.Exec, 1, []byte(`{}`)))
	ef := fa.next(t, 0)
	// a window's worth for the client that never reads, many times over the
	// socket buffers: the agent sends it whole (it has the credit) and the
	// shim must not stop reading the port for it
	chunk := make([]byte, 16*1024)
	for i := 0; i < 4; i++ {
		fa.conn.Write(encode(proto.Stdout, es.Stream, chunk))
	}
	fa.conn.Write(encode(proto.Stdout, ef.Stream, []byte("still here")))
	if f := fast.read(t); string(f.Payload) != "still here" {
		t.Fatalf("fast got %q", f.Payload)
	}
	// what the slow client reads is granted back to the agent, in batches
	for i := 0; i < 4; i++ {
		if f := slow.read(t); f.Type != proto.Stdout || len(f.Payload) != len(chunk) {
			t.Fatalf("slow got type %x, %d bytes", f.Type, len(f.Payload))
		}
	}
	granted := uint32(0)
	for granted < 4*uint32(len(chunk)) {
		f := fa.next(t, 0)
		if f.Type != proto.Window || f.Stream != es.Stream {
			t.Fatalf("agent got type %x on %d, want WINDOW on %d", f.Type, f.Stream, es.Stream)
		}
		granted += binary.BigEndian.Uint32(f.Payload)
	}
	if granted != 4*uint32(len(chunk)) {
		t.Fatalf("granted %d bytes for %d read", granted, 4*len(chunk))
	}
}

// A spare port whose first session fails to start (the guest did not answer
// its HELLO) is opened again once the box is busy again after the wait, and
// then carries streams.
func TestASpareThatFailedIsOpenedAgain(t *testing.T) {
	first := spareRetry
	spareRetry = 50 * time.Millisecond
	defer func() { spareRetry = first }()
	s, fa, mux := newTestShim(t, []string{"exec", "cancel", "window"})
	spare := filepath.Join(s.dir, "port1.sock")
	ln, err := net.Listen("unix", spare)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	second := make(chan *fakeAgent, 1)
	go func() {
		refused, err := ln.Accept() // the first session: HELLO unanswered, then gone
		if err != nil {
			return
		}
		_, _ = readFrame(bufio.NewReader(refused), make([]byte, headerSize), fromClient)
		refused.Close()
		ln.Close()
		// the second: a fake agent that answers
		second <- startFake(t, spare, []string{"exec", "cancel", "window"})
	}()
	s.mu.Lock()
	s.spare = []string{spare}
	s.mu.Unlock()

	c := dialClient(t, mux)
	c.conn.Write(encode(proto.Exec, 1, []byte(`{}`))) // port 0 carries a stream: busy
	fa.next(t, 0)
	c.conn.Write(encode(proto.Exec, 2, []byte(`{}`))) // opens the spare, which fails
	fa.next(t, 0)
	fa2 := <-second
	waitFor(t, "the failed spare port to go back among the spares", func() bool {
		return !s.opening && len(s.spare) == 1
	}, &s.mu)
	time.Sleep(2 * spareRetry)
	c.conn.Write(encode(proto.Exec, 3, []byte(`{}`))) // busy again: the spare is opened
	fa.next(t, 0)
	waitFor(t, "the spare port to open", func() bool { return len(s.ports) == 2 }, &s.mu)
	c.conn.Write(encode(proto.Exec, 4, []byte(`{}`))) // the least loaded port: the new one
	if f := fa2.next(t, 0); f.Type != proto.Exec {
		t.Fatalf("the reopened port got type %x, want EXEC", f.Type)
	}
}

// waitFor polls cond, under mu, for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool, mu *sync.Mutex) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		ok := cond()
		mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
