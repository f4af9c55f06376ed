package main

// A mux client: one host connection to <box dir>/mux.sock speaking protocol
// v1 exactly as it would on a port of its own. Its stream ids are its own;
// each stream is carried by the least busy agent port under an id of the
// port's. When the client goes away, its operations are cancelled, as the
// agent does for a session that ends.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"sync"

	"microbox/proto"
)

const clientQueue = 8 << 20 // bytes queued for a client on ports without a window

type client struct {
	s    *shim
	conn net.Conn
	out  *outbox

	mu      sync.Mutex
	streams map[uint32]*route
	closed  bool
}

func (s *shim) serveClient(conn net.Conn) {
	limit := 0
	if s.first.window == 0 {
		limit = clientQueue
	}
	c := &client{s: s, conn: conn, out: newOutbox(limit), streams: map[uint32]*route{}}
	go func() {
		_ = c.out.run(conn)
		conn.Close()
	}()
	c.readLoop()
	c.close()
}

type hello struct {
	Version int    `json:"version"`
	Session string `json:"session"`
}

func (c *client) reply(session string) {
	p := c.s.first
	caps := []string{proto.CapMux}
	for _, cap := range p.hello.Capabilities {
		if cap != proto.CapWindow {
			caps = append(caps, cap)
		}
	}
	c.out.push(encodeJSON(proto.HelloReply, 0, helloReply{Version: protocolVersion, Session: session,
		Agent: p.hello.Agent, Capabilities: caps}), nil)
}

func (c *client) fail(stream uint32, kind, msg string) {
	c.out.push(encodeJSON(proto.Error, stream, errorMsg{Kind: kind, Message: msg}), nil)
}

func (c *client) readLoop() {
	r := bufio.NewReaderSize(c.conn, chunkSize+headerSize)
	hdr := make([]byte, headerSize)
	greeted := false
	for {
		f, err := readFrame(r, hdr, fromClient)
		if err != nil {
			if isBadFrame(err) {
				c.fail(0, "protocol", err.Error())
			}
			return
		}
		if f.Type == proto.Hello {
			var h hello
			if f.Stream != 0 || json.Unmarshal(f.Payload, &h) != nil || h.Session == "" {
				c.fail(0, "protocol", "malformed HELLO")
				return
			}
			if h.Version != protocolVersion {
				c.fail(0, "version", fmt.Sprintf("this box speaks protocol version %d", protocolVersion))
				return
			}
			c.cancelAll() // a new session ends the previous one
			c.reply(h.Session)
			greeted = true
			continue
		}
		if !greeted {
			c.fail(0, "protocol", "HELLO must come first")
			return
		}
		if !c.handle(f) {
			return
		}
	}
}

// handle routes one frame from the client; false ends the client.
func (c *client) handle(f Frame) bool {
	if f.Stream == 0 {
		if f.Type != proto.Ping {
			c.fail(0, "protocol", "only HELLO and PING may use stream 0")
			return false
		}
	}
	c.mu.Lock()
	rt := c.streams[f.Stream]
	c.mu.Unlock()
	if requests[f.Type] {
		if rt != nil && f.Stream != 0 {
			c.fail(0, "protocol", "a request on a stream that is in use")
			return false
		}
		p := c.s.pick()
		rt = p.open(f.Type, c, f.Stream)
		if f.Stream != 0 {
			c.mu.Lock()
			if c.closed {
				c.mu.Unlock()
				p.cancel(rt)
				return false
			}
			c.streams[f.Stream] = rt
			c.mu.Unlock()
		}
		return p.out.push(encode(f.Type, rt.gid, f.Payload), nil)
	}
	if rt == nil {
		return true // the stream ended already: the agent would ignore it too
	}
	rt.port.send(rt, f.Type, f.Payload)
	return true
}

// deliver queues a frame from the agent for this client, under the client's
// own stream id; its metered bytes are granted back once written.
func (c *client) deliver(r *route, f Frame, end bool) {
	if end && r.cid != 0 {
		c.mu.Lock()
		if c.streams[r.cid] == r {
			delete(c.streams, r.cid)
		}
		c.mu.Unlock()
	}
	var after func()
	if counted(f.Type) && !end {
		n := len(f.Payload)
		after = func() { r.consumed(n) }
	}
	c.out.push(encode(f.Type, r.cid, f.Payload), after)
}

func (c *client) cancelAll() {
	c.mu.Lock()
	routes := c.streams
	c.streams = map[uint32]*route{}
	c.mu.Unlock()
	for _, rt := range routes {
		rt.port.cancel(rt)
	}
}

func (c *client) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancelAll()
	c.out.close()
}
