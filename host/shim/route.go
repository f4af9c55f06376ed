package main

// A route is one stream of one agent port, owned by a sink (a mux client's
// stream, or a forwarded TCP connection). It carries the stream's
// flow-control state when the port's session has a window.

import (
	"microbox/proto"
	"sync"
)

// sink receives the frames of its routes. deliver must not block on the
// sink's peer when the port has a window (the port reader calls it).
type sink interface {
	deliver(r *route, f Frame, last bool)
}

type route struct {
	port *port
	gid  uint32 // the stream id on the port
	kind byte   // the request that opened it
	sink sink
	cid  uint32 // the sink's own id for it (a client's stream id; 0 for a client's PING)

	mu        sync.Mutex
	cond      *sync.Cond
	credit    int64 // host→guest bytes the agent still accepts
	dead      bool
	unGranted uint32 // guest→host bytes written to the sink, not yet granted back
}

func newRoute(p *port, gid uint32, kind byte, s sink, cid uint32) *route {
	r := &route{port: p, gid: gid, kind: kind, sink: s, cid: cid, credit: int64(p.window)}
	r.cond = sync.NewCond(&r.mu)
	return r
}

// take waits for n bytes of send credit; false once the route is dead.
func (r *route) take(n int) bool {
	if r.port.window == 0 {
		return !r.isDead()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.credit < int64(n) && !r.dead {
		r.cond.Wait()
	}
	if r.dead {
		return false
	}
	r.credit -= int64(n)
	return true
}

func (r *route) addCredit(n uint32) {
	r.mu.Lock()
	r.credit += int64(n)
	r.cond.Broadcast()
	r.mu.Unlock()
}

func (r *route) kill() {
	r.mu.Lock()
	r.dead = true
	r.cond.Broadcast()
	r.mu.Unlock()
}

func (r *route) isDead() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dead
}

// consumed records that n bytes of the route's output reached its peer, and
// grants them back to the agent in batches of a quarter window.
func (r *route) consumed(n int) {
	p := r.port
	if p.window == 0 || n == 0 {
		return
	}
	r.mu.Lock()
	if r.dead {
		r.mu.Unlock()
		return
	}
	r.unGranted += uint32(n)
	grant := uint32(0)
	if r.unGranted >= p.window/4 {
		grant, r.unGranted = r.unGranted, 0
	}
	r.mu.Unlock()
	if grant > 0 {
		p.out.push(windowFrame(r.gid, grant), nil)
	}
}

// last reports whether f ends the stream of a route opened by `kind`.
func last(kind byte, f Frame) bool {
	switch f.Type {
	case proto.Exit, proto.Done, proto.Error, proto.Pong:
		return true
	case proto.Data:
		return kind == proto.Get && len(f.Payload) == 0
	}
	return false
}
