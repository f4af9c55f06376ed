package main

// One agent port: a session that lives as long as the box, carrying the
// streams of every client. Only this process writes to the port, one whole
// frame at a time, so its framing never tears.

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"time"

	"microbox/proto"
)

const portQueue = 8 << 20 // bytes queued for a port before writers wait

type port struct {
	name   string // port<N>.sock
	conn   net.Conn
	out    *outbox
	hello  helloReply
	caps   map[string]bool
	window uint32 // per-stream credit agreed with the agent; 0: no flow control

	mu     sync.Mutex
	routes map[uint32]*route
	next   uint32
}

type helloReply struct {
	Version      int      `json:"version"`
	Session      string   `json:"session"`
	Agent        string   `json:"agent"`
	Capabilities []string `json:"capabilities"`
}

const handshakeTimeout = 10 * time.Second

// openPort connects to an agent port and starts a session on it.
func openPort(path string, window uint32) (*port, error) {
	conn, err := net.DialTimeout("unix", path, handshakeTimeout)
	if err != nil {
		return nil, err
	}
	p := &port{name: filepath.Base(path), conn: conn, out: newOutbox(portQueue),
		routes: map[uint32]*route{}}
	if err := p.handshake(window); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: %w", p.name, err)
	}
	return p, nil
}

// handshake sends HELLO and waits for the reply carrying its nonce. Bytes
// before it (the tail of an earlier client's session) are skipped one byte at
// a time until a frame decodes; an ERROR of kind "protocol" means the agent
// lost the framing and hunts for a HELLO, so another one is sent.
func (p *port) handshake(window uint32) error {
	deadline := time.Now().Add(handshakeTimeout)
	_ = p.conn.SetDeadline(deadline)
	defer func() { _ = p.conn.SetDeadline(time.Time{}) }()
	nonce, err := p.sendHello(window)
	if err != nil {
		return err
	}
	r := bufio.NewReaderSize(p.conn, 64*1024+headerSize)
	hdr := make([]byte, headerSize)
	for resends := 3; ; {
		head, err := r.Peek(headerSize)
		if err != nil {
			return err
		}
		f, ok := peekControl(r, head)
		if !ok {
			if _, err := r.Discard(1); err != nil {
				return err
			}
			continue
		}
		if _, err := readFrame(r, hdr, fromGuest); err != nil {
			return err
		}
		if f.Type == proto.Error {
			var e errorMsg
			_ = json.Unmarshal(f.Payload, &e)
			if e.Kind == "protocol" && resends > 0 {
				resends--
				if nonce, err = p.sendHello(window); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("the agent refused the session: %s", e.Message)
		}
		var reply helloReply
		if json.Unmarshal(f.Payload, &reply) != nil || reply.Session != nonce {
			continue
		}
		if reply.Version != protocolVersion {
			return fmt.Errorf("the agent speaks protocol %d, not %d", reply.Version, protocolVersion)
		}
		if r.Buffered() > 0 {
			return errors.New("the agent sent data before the session began")
		}
		p.hello = reply
		p.caps = map[string]bool{}
		for _, c := range reply.Capabilities {
			p.caps[c] = true
		}
		if p.caps[proto.CapWindow] {
			p.window = window
		}
		return nil
	}
}

// peekControl decodes a stream-0 HELLO_REPLY or ERROR at the head of r
// without consuming it.
func peekControl(r *bufio.Reader, head []byte) (Frame, bool) {
	length := int(binary.BigEndian.Uint32(head[0:4]))
	t := head[4]
	if (t != proto.HelloReply && t != proto.Error) || head[5]|head[6]|head[7]|head[8] != 0 ||
		length < 6 || length > 64*1024+5 {
		return Frame{}, false
	}
	whole, err := r.Peek(4 + length)
	if err != nil {
		return Frame{}, false
	}
	payload := whole[headerSize:]
	var obj map[string]interface{}
	if payload[0] != '{' || json.Unmarshal(payload, &obj) != nil {
		return Frame{}, false
	}
	return Frame{Type: t, Payload: append([]byte(nil), payload...)}, true
}

func (p *port) sendHello(window uint32) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	nonce := hex.EncodeToString(b[:])
	hello := map[string]interface{}{"version": protocolVersion, "session": nonce,
		"time_ns": time.Now().UnixNano(), "window": window}
	_, err := p.conn.Write(encodeJSON(proto.Hello, 0, hello))
	return nonce, err
}

// open registers a new route on this port.
func (p *port) open(kind byte, s sink, cid uint32) *route {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		p.next++
		if p.next == 0 {
			p.next = 1
		}
		if _, used := p.routes[p.next]; !used {
			break
		}
	}
	r := newRoute(p, p.next, kind, s, cid)
	p.routes[r.gid] = r
	return r
}

func (p *port) load() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.routes)
}

func (p *port) forget(r *route) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.routes[r.gid] != r {
		return false
	}
	delete(p.routes, r.gid)
	return true
}

// cancel ends a route whose owner went away: the agent stops its operation
// (with the "cancel" capability), or kills its process (without it).
func (p *port) cancel(r *route) {
	if !p.forget(r) {
		return
	}
	r.kill()
	switch {
	case p.caps[proto.CapCancel]:
		p.out.push(encode(proto.Cancel, r.gid, []byte("{}")), nil)
	case r.kind == proto.Exec:
		p.out.push(encode(proto.Signal, r.gid, []byte(`{"signal":9}`)), nil)
	}
}

// send writes a frame of route r to the agent, waiting for credit when the
// frame carries metered bytes; false once the route is dead.
func (p *port) send(r *route, t byte, payload []byte) bool {
	if p.window > 0 && counted(t) && !r.take(len(payload)) {
		return false
	}
	return p.out.push(encode(t, r.gid, payload), nil)
}

// readLoop hands every frame from the agent to the sink of its route, and
// returns when the port closes (the VM exited or reset).
func (p *port) readLoop() error {
	r := bufio.NewReaderSize(p.conn, chunkSize+headerSize)
	hdr := make([]byte, headerSize)
	for {
		f, err := readFrame(r, hdr, fromGuest)
		if err != nil {
			return err
		}
		if f.Stream == 0 {
			if f.Type == proto.Error {
				return fmt.Errorf("the agent ended the session on %s: %s", p.name, f.Payload)
			}
			continue
		}
		p.mu.Lock()
		rt := p.routes[f.Stream]
		p.mu.Unlock()
		if rt == nil {
			continue // a cancelled stream's tail
		}
		if f.Type == proto.Window {
			if len(f.Payload) == 4 {
				rt.addCredit(binary.BigEndian.Uint32(f.Payload))
			}
			continue
		}
		end := last(rt.kind, f)
		if end {
			p.forget(rt)
			rt.kill()
		}
		rt.sink.deliver(rt, f, end)
	}
}
