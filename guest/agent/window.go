package main

// Flow control (capability "window"). A HELLO with "window": N gives every
// stream of its session N bytes of credit in each direction:
//
//   - guest→host: the producer of a stream (a process's output pump, a GET,
//     TAR_GET or CONNECT reader) sends at most its credit in payload bytes of
//     STDOUT, STDERR and DATA, and waits, alone, for the host's WINDOW frames;
//     the port reader and the other streams go on.
//   - host→guest: the host sends at most its credit in STDIN and DATA
//     payloads; the agent grants more with WINDOW frames as the process,
//     connection or file takes the bytes, in batches of N/4. A stream's queue
//     thus never holds more than N bytes, and the port reader never waits
//     for one stream. Bytes past the credit are a protocol error.

import (
	"encoding/binary"
	"microbox/proto"
	"sync"
)

const (
	maxWindow = 64 << 20 // largest "window" a HELLO may ask for
	maxCredit = 1 << 62  // credit granted by the host stops growing here
)

// flow is the credit of one stream in both directions; a nil *flow (a
// session without flow control) never limits anything.
type flow struct {
	s      *Session
	stream uint32
	batch  int64 // grant host credit once this much was consumed

	mu       sync.Mutex
	cond     sync.Cond
	closed   bool  // the stream ended: nothing more is sent on it
	credit   int64 // payload bytes the agent may still send
	allowed  int64 // host payload bytes the host may send in all: N and every grant
	received int64
	pending  int64 // consumed and not yet granted
}

func newFlow(s *Session, stream uint32, window int64) *flow {
	f := &flow{s: s, stream: stream, batch: window / 4, credit: window, allowed: window}
	if f.batch == 0 {
		f.batch = 1
	}
	f.cond.L = &f.mu
	return f
}

// take reserves up to want bytes of credit, waiting while there is none. It
// returns ok false once the stream ended: then nothing may be sent on it.
func (f *flow) take(want int) (n int, ok bool) {
	if f == nil {
		return want, true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.credit == 0 && !f.closed {
		f.cond.Wait()
	}
	if f.closed {
		return 0, false
	}
	if int64(want) > f.credit {
		want = int(f.credit)
	}
	f.credit -= int64(want)
	return want, true
}

// peek says how much to read to send what the credit allows now: up to
// want bytes, and at least one, so that the end of the input is seen even
// without credit. It reserves nothing; ok is false once the stream ended.
func (f *flow) peek(want int) (n int, ok bool) {
	if f == nil {
		return want, true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, false
	}
	if int64(want) > f.credit {
		want = int(f.credit)
	}
	if want < 1 {
		want = 1
	}
	return want, true
}

// add is credit from the host (WINDOW).
func (f *flow) add(n uint32) {
	f.mu.Lock()
	if f.credit += int64(n); f.credit > maxCredit {
		f.credit = maxCredit
	}
	f.cond.Broadcast()
	f.mu.Unlock()
}

// close ends the stream's flow: waiting producers give up, no more WINDOW is
// sent. It runs before the stream's last frame, and waits for a WINDOW in
// flight, so none follows that frame.
func (f *flow) close() {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.closed = true
	f.cond.Broadcast()
	f.mu.Unlock()
}

func (f *flow) open() bool {
	if f == nil {
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.closed
}

// receive accounts n host bytes arriving on the port reader.
func (f *flow) receive(n int) *protoError {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.received += int64(n)
	if f.received > f.allowed {
		return errProtocol("stream %d: the host sent %d bytes past its window", f.stream, f.received-f.allowed)
	}
	return nil
}

// consumed: n host bytes left the stream's queue (written, or dropped once
// nothing reads them). A batch of them becomes a WINDOW for the host.
func (f *flow) consumed(n int) {
	if f == nil || n <= 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	if f.pending += int64(n); f.pending < f.batch {
		return
	}
	grant := f.pending
	f.pending = 0
	f.allowed += grant
	f.s.send(proto.Window, f.stream, windowPayload(uint32(grant)))
}

func windowPayload(n uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	return b[:]
}
