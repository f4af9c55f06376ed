package main

// A session is one host connection on one port: HELLO, then operations on
// streams, until the host disconnects (read returns EOF).

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"microbox/proto"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Agent holds what every session shares. Hooks that touch the machine
// (clock, hostname, shutdown) are set only by main, so tests can run the
// session logic as an ordinary process.
type Agent struct {
	Reaper     *Reaper
	PasswdPath string
	GroupPath  string
	ConsoleFd  int // stdout/stderr of detached processes

	SetClock     func(ns int64) error
	SetHostname  func(name string) error
	AddEntropy   func(b []byte) error
	SetMachineID func(id string) error
	Shutdown     func(s *Session, stream uint32)
	MainExited   func(ws syscall.WaitStatus) // a detached EXEC with "main" ended
	Logf         func(format string, args ...interface{})
	Mount        func(m boxMount) error // mounts.go; nil in tests that mount nothing

	mountMu sync.Mutex
	mounted []boxMount // unmounted at shutdown, so that volumes are left clean

	devNullOnce sync.Once
	devNull     int
	devNullErr  error
}

func (a *Agent) logf(format string, args ...interface{}) {
	if a.Logf != nil {
		a.Logf(format, args...)
	}
}

// nullFd returns a shared /dev/null descriptor (close-on-exec).
func (a *Agent) nullFd() (int, error) {
	a.devNullOnce.Do(func() {
		a.devNull, a.devNullErr = syscall.Open("/dev/null", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	})
	return a.devNull, a.devNullErr
}

// streamOp is a running operation that receives frames on its stream.
type streamOp interface {
	handle(f Frame)
	abort() // the session ended
}

// Session is the state of one host connection.
type Session struct {
	a      *Agent
	p      *Port
	dead   atomic.Bool // set once the host is gone: output is dropped
	hello  bool        // touched by the reading goroutine only
	window int64       // flow control credit per stream and direction; 0: none

	mu    sync.Mutex
	ops   map[uint32]streamOp
	flows map[uint32]*flow // with a window: each registered stream's credit

	endOnce sync.Once
}

// ServeSession serves sessions on p until the host disconnects. It returns
// nil on end-of-file and the read error otherwise. Every non-detached process
// of a session is killed when the session ends.
//
// A new session can also begin without a disconnect being seen: with a HELLO
// in the middle of a session (virtio_console does not report a disconnect
// followed by a reconnect before read(2) runs again), or with the HELLO that
// the hunt finds after the framing broke (resync.go).
func (a *Agent) ServeSession(p *Port) error {
	l := &sessionLoop{a: a, p: p, s: newSession(a, p)}
	defer func() { l.s.end() }()
	for {
		gap := time.Duration(-1)
		if l.hunt == nil && l.dec.Pending() > 0 {
			gap = frameGap
		}
		data, err := p.readWithin(gap)
		switch {
		case err == errStalled:
			data = l.dec.Salvage()
			l.lose(errProtocol("a frame stopped after %d bytes and nothing came for %v",
				l.dec.Pending(), frameGap))
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		}
		l.take(data)
	}
}

// sessionLoop is the reading side of one port: the current session, the
// frame decoder and, while the framing is lost, the hunt for a HELLO.
type sessionLoop struct {
	a    *Agent
	p    *Port
	s    *Session
	dec  Decoder
	hunt *hunter
}

// take decodes and dispatches input, hunting first if the framing is lost.
func (l *sessionLoop) take(data []byte) {
	for {
		if l.hunt != nil {
			hello, rest, ok := l.hunt.feed(data)
			if !ok {
				return
			}
			l.a.logf("session on %s: found a HELLO, in sync again", l.p.name)
			l.hunt = nil
			l.s = newSession(l.a, l.p)
			data = append(encodeFrame(proto.Hello, 0, hello.Payload), rest...)
		}
		frames, derr := l.dec.Feed(data)
		salvage, perr := l.dispatchAll(frames)
		if perr == nil && derr != nil {
			perr, salvage = derr.(*protoError), l.dec.Salvage()
		}
		if perr == nil {
			return
		}
		l.lose(perr)
		data = salvage // the next host's HELLO may be in what followed the failure
	}
}

// dispatchAll dispatches frames in order. On an error it returns the error
// and the undispatched bytes: the frames after the failing one and whatever
// the decoder holds.
func (l *sessionLoop) dispatchAll(frames []Frame) ([]byte, *protoError) {
	for i, f := range frames {
		perr := l.s.dispatch(f)
		if perr == errNewHost {
			l.a.logf("session on %s: HELLO from a new host", l.p.name)
			l.s.end()
			l.s = newSession(l.a, l.p)
			perr = l.s.dispatch(f)
		}
		if perr != nil {
			var rest []byte
			for _, g := range frames[i+1:] {
				rest = append(rest, encodeFrame(g.Type, g.Stream, g.Payload)...)
			}
			return append(rest, l.dec.held()...), perr
		}
	}
	return nil, nil
}

// lose reports a protocol error to the host, ends the session and starts
// the hunt for the next HELLO.
func (l *sessionLoop) lose(perr *protoError) {
	l.a.logf("session on %s: %v; waiting for a HELLO", l.p.name, perr)
	l.s.sendJSON(proto.Error, 0, errorMsg{Kind: perr.kind, Message: perr.msg})
	l.s.end()
	l.dec = Decoder{}
	l.hunt = &hunter{}
}

func newSession(a *Agent, p *Port) *Session {
	return &Session{a: a, p: p, ops: make(map[uint32]streamOp), flows: make(map[uint32]*flow)}
}

// errNewHost: a HELLO arrived in a session that already had one.
var errNewHost = &protoError{kind: "protocol", msg: "HELLO repeated within a session"}

// hostGone reports, without reading, that the host of a virtio port left.
func (s *Session) hostGone() bool {
	return s.dead.Load() || (s.p.virtio && !s.p.hostConnected())
}

// end marks the session dead and aborts every operation still running.
func (s *Session) end() {
	s.endOnce.Do(func() {
		s.dead.Store(true)
		s.mu.Lock()
		ops, flows := s.ops, s.flows
		s.ops, s.flows = make(map[uint32]streamOp), make(map[uint32]*flow)
		s.mu.Unlock()
		for _, f := range flows {
			f.close()
		}
		for _, op := range ops {
			op.abort()
		}
	})
}

// sendFrame writes one encoded frame unless the session is dead.
func (s *Session) sendFrame(b []byte) bool {
	if s.dead.Load() {
		return false
	}
	s.p.wmu.Lock()
	defer s.p.wmu.Unlock()
	if s.dead.Load() {
		return false
	}
	return s.p.writeFrame(b) == nil
}

func (s *Session) send(t byte, stream uint32, payload []byte) bool {
	return s.sendFrame(encodeFrame(t, stream, payload))
}

func (s *Session) sendJSON(t byte, stream uint32, v interface{}) bool {
	return s.send(t, stream, marshalJSON(v))
}

func (s *Session) sendError(stream uint32, kind, format string, args ...interface{}) {
	s.sendJSON(proto.Error, stream, errorMsg{Kind: kind, Message: fmt.Sprintf(format, args...)})
}

// register makes op the operation of stream, and returns the stream's flow
// control (nil without a window).
func (s *Session) register(stream uint32, op streamOp) *flow {
	var f *flow
	if s.window > 0 {
		f = newFlow(s, stream, s.window)
	}
	s.mu.Lock()
	s.ops[stream] = op
	if f != nil {
		s.flows[stream] = f
	}
	s.mu.Unlock()
	return f
}

// flowOf returns the flow control of a registered stream, or nil.
func (s *Session) flowOf(stream uint32) *flow {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flows[stream]
}

// unregister drops stream from the registry (s.mu held) and returns its
// flow, to be closed before the stream's last frame is sent.
func (s *Session) unregister(stream uint32) *flow {
	f := s.flows[stream]
	delete(s.ops, stream)
	delete(s.flows, stream)
	return f
}

func (s *Session) lookup(stream uint32) streamOp {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ops[stream]
}

// forget drops a stream without sending anything.
func (s *Session) forget(stream uint32) {
	s.mu.Lock()
	f := s.unregister(stream)
	s.mu.Unlock()
	f.close()
}

// finish ends an operation: forget the stream, then send its last frame,
// unless the stream was no longer registered (a CANCEL, or the end of the
// session, came first and ended it).
func (s *Session) finish(stream uint32, t byte, payload []byte) {
	s.mu.Lock()
	_, ok := s.ops[stream]
	f := s.unregister(stream)
	s.mu.Unlock()
	f.close()
	if ok {
		s.send(t, stream, payload)
	}
}

// claim forgets stream if op still runs on it, and reports whether it did:
// the caller then owns the stream's last frame.
func (s *Session) claim(stream uint32, op streamOp) bool {
	s.mu.Lock()
	if s.ops[stream] != op {
		s.mu.Unlock()
		return false
	}
	f := s.unregister(stream)
	s.mu.Unlock()
	f.close()
	return true
}

// cancel ends the operation on stream as the end of the session would, then
// finishes the stream: an exec's EXIT follows once its process group is
// dead; any other operation ends with ERROR cancelled. A SHUTDOWN cannot be
// cancelled; an unknown or finished stream is ignored.
func (s *Session) cancel(stream uint32) {
	switch op := s.lookup(stream).(type) {
	case nil, nopOp:
	case *proc:
		op.abort()
	default:
		if !s.claim(stream, op) {
			return
		}
		op.abort()
		go func() {
			if o, ok := op.(interface{ settle() }); ok {
				o.settle() // a frame in flight goes first; ERROR is the last
			}
			s.sendError(stream, "cancelled", "cancelled by the host")
		}()
	}
}

// dispatch handles one frame from the host. A returned error ends the session.
func (s *Session) dispatch(f Frame) *protoError {
	if !rawTypes[f.Type] {
		if e := checkObject(f.Type, f.Payload); e != nil {
			return e
		}
	}
	if !s.hello {
		if f.Type != proto.Hello {
			return errProtocol("expected HELLO, got %s", typeName(f.Type))
		}
		return s.handleHello(f)
	}
	if f.Type == proto.Hello {
		return errNewHost
	}
	if s.dead.Load() {
		return nil // the host went away: nothing more is started for it
	}
	switch f.Type {
	case proto.Ping:
		if len(f.Payload) > maxPing {
			return errProtocol("PING payload of %d bytes exceeds %d", len(f.Payload), maxPing)
		}
		s.send(proto.Pong, f.Stream, f.Payload)
	case proto.Exec, proto.Put, proto.Get, proto.Shutdown, proto.Connect, proto.TarGet, proto.TarPut:
		if f.Stream == 0 {
			return errProtocol("%s on stream 0", typeName(f.Type))
		}
		if s.lookup(f.Stream) != nil {
			return errProtocol("stream %d is already in use", f.Stream)
		}
		switch f.Type {
		case proto.Exec:
			s.handleExec(f.Stream, f.Payload)
		case proto.Put:
			s.handlePut(f.Stream, f.Payload)
		case proto.Get:
			s.handleGet(f.Stream, f.Payload)
		case proto.Shutdown:
			s.handleShutdown(f.Stream)
		case proto.Connect:
			s.handleConnect(f.Stream, f.Payload)
		case proto.TarGet:
			s.handleTarGet(f.Stream, f.Payload)
		case proto.TarPut:
			s.handleTarPut(f.Stream, f.Payload)
		}
	case proto.Cancel:
		s.cancel(f.Stream)
	case proto.Window:
		if len(f.Payload) != 4 {
			return errProtocol("WINDOW payload of %d bytes, not 4", len(f.Payload))
		}
		if fl := s.flowOf(f.Stream); fl != nil {
			fl.add(binary.BigEndian.Uint32(f.Payload))
		}
	case proto.Stdin, proto.Signal, proto.Resize, proto.Data:
		// Frames for a stream that already ended (or never existed) are
		// dropped: the host may send them while the EXIT is in flight.
		op := s.lookup(f.Stream)
		if op == nil {
			return nil
		}
		if f.Type == proto.Stdin || f.Type == proto.Data {
			if perr := s.flowOf(f.Stream).receive(len(f.Payload)); perr != nil {
				return perr
			}
		}
		op.handle(f)
	default:
		return errProtocol("%s is not sent by the host", typeName(f.Type))
	}
	return nil
}

type helloMsg struct {
	Version   *int64   `json:"version"`
	Session   *string  `json:"session"`
	TimeNs    int64    `json:"time_ns"`
	Hostname  string   `json:"hostname"`
	Entropy   []byte   `json:"entropy"`    // base64 in JSON
	MachineID string   `json:"machine_id"` // 32 lowercase hex digits
	Window    int64    `json:"window"`     // flow control: bytes of credit per stream and direction
	Mounts    []string `json:"mounts"`     // KIND:SOURCE:MODE:HEXTARGET each (mounts.go)
}

func (s *Session) handleHello(f Frame) *protoError {
	var h helloMsg
	if err := json.Unmarshal(f.Payload, &h); err != nil {
		return errProtocol("bad HELLO: %v", err)
	}
	if h.Version == nil {
		return errProtocol("HELLO without version")
	}
	if *h.Version != protocolVersion {
		return &protoError{kind: "version", msg: fmt.Sprintf(
			"agent speaks protocol version %d, host asked for %d", protocolVersion, *h.Version)}
	}
	if h.Session == nil {
		return errProtocol("HELLO without session")
	}
	if len(*h.Session) > 64 {
		return errProtocol("session nonce longer than 64 characters")
	}
	if len(h.Entropy) > maxEntropy {
		return errProtocol("entropy longer than %d bytes", maxEntropy)
	}
	if h.MachineID != "" && !validMachineID(h.MachineID) {
		return errProtocol("machine_id is not 32 lowercase hex digits")
	}
	if h.Window < 0 || h.Window > maxWindow {
		return errProtocol("window must be in 0..%d", maxWindow)
	}
	if len(h.Mounts) > maxMounts {
		return errProtocol("more than %d mounts", maxMounts)
	}
	mounts := make([]boxMount, 0, len(h.Mounts))
	for _, v := range h.Mounts {
		m, err := parseMount(v)
		if err != nil {
			return errProtocol("%v", err)
		}
		mounts = append(mounts, m)
	}
	// Identity before the reply: the host runs nothing until it has it.
	if len(h.Entropy) > 0 && s.a.AddEntropy != nil {
		if err := s.a.AddEntropy(h.Entropy); err != nil {
			s.a.logf("add entropy: %v", err)
		}
	}
	if h.MachineID != "" && s.a.SetMachineID != nil {
		if err := s.a.SetMachineID(h.MachineID); err != nil {
			s.a.logf("set machine-id: %v", err)
		}
	}
	if h.TimeNs > 0 && s.a.SetClock != nil {
		if err := s.a.SetClock(h.TimeNs); err != nil {
			s.a.logf("set clock: %v", err)
		}
	}
	if h.Hostname != "" && s.a.SetHostname != nil {
		if err := s.a.SetHostname(h.Hostname); err != nil {
			s.a.logf("set hostname: %v", err)
		}
	}
	s.a.mountAll(mounts) // before the reply: no command runs without them
	s.hello = true
	s.window = h.Window
	s.sendJSON(proto.HelloReply, 0, helloReply{
		Version: protocolVersion, Session: *h.Session, Agent: agentName, Capabilities: capabilities,
	})
	return nil
}

func (s *Session) handleShutdown(stream uint32) {
	if s.a.Shutdown == nil {
		s.sendError(stream, "invalid", "shutdown is not available")
		return
	}
	s.register(stream, nopOp{})
	go s.a.Shutdown(s, stream)
}

type nopOp struct{}

func (nopOp) handle(Frame) {}
func (nopOp) abort()       {}
