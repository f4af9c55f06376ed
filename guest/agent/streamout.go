package main

// streamOut is the sending side of an operation whose frames come from a
// goroutine of its own (GET, TAR_GET, CONNECT). Once stopped (CANCEL, or the
// end of the session) it passes nothing more, and it sends the stream's last
// frame at most once, so no frame of the stream can follow that one.

import (
	"microbox/proto"
	"sync"
	"sync/atomic"
)

type streamOut struct {
	s       *Session
	stream  uint32
	fl      *flow      // set when the op is registered
	mu      sync.Mutex // held across each send: settle waits for one in flight
	stopped atomic.Bool
}

func newStreamOut(s *Session, stream uint32) *streamOut {
	return &streamOut{s: s, stream: stream}
}

// frame sends one encoded frame of this stream; false once stopped or when
// the session is dead.
func (o *streamOut) frame(b []byte) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.stopped.Load() && o.s.sendFrame(b)
}

func (o *streamOut) sendJSON(t byte, v interface{}) bool {
	return o.frame(encodeFrame(t, o.stream, marshalJSON(v)))
}

// finish sends the stream's last frame and forgets the stream, unless the
// stream was stopped (or finished) before.
func (o *streamOut) finish(t byte, payload []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stopped.Swap(true) {
		return
	}
	o.s.finish(o.stream, t, payload)
}

func (o *streamOut) fail(kind, msg string) {
	o.finish(proto.Error, marshalJSON(errorMsg{Kind: kind, Message: msg}))
}

// stop refuses every later frame without waiting: it runs on the port
// reader, which must not wait for a send in flight.
func (o *streamOut) stop() { o.stopped.Store(true) }

// settle returns once no send is in flight: after stop, the stream is silent.
func (o *streamOut) settle() {
	o.mu.Lock()
	o.mu.Unlock()
}
