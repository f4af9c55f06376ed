package main

// CONNECT: a TCP connection from the agent to a server in the box, its
// bytes carried by DATA frames both ways (an empty DATA ends a direction).
// Host bytes wait in a byteQueue, as STDIN does, so a server that does not
// read stalls only its own connection.

import (
	"errors"
	"fmt"
	"io"
	"microbox/proto"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"
)

var dialTimeout = 10 * time.Second // a var so tests can shorten it

type connectRequest struct {
	Port *int   `json:"port"`
	Host string `json:"host"`
}

// connOp is one CONNECT stream.
type connOp struct {
	*streamOut
	in *byteQueue

	mu      sync.Mutex
	conn    net.Conn // nil while dialing
	aborted bool
	ended   int // directions that reached their end
}

func (s *Session) handleConnect(stream uint32, payload []byte) {
	var r connectRequest
	if !s.decodeRequest(stream, proto.Connect, payload, &r) {
		return
	}
	if r.Port == nil || *r.Port < 1 || *r.Port > 65535 {
		s.sendError(stream, "invalid", "port must be a number in 1..65535")
		return
	}
	host := r.Host
	if host == "" {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	if ip == nil {
		s.sendError(stream, "invalid", "host must be an IP address, not %q", host)
		return
	}
	op := &connOp{streamOut: newStreamOut(s, stream)}
	op.fl = s.register(stream, op)
	op.in = s.newByteQueue(op.fl)
	go op.dial(net.JoinHostPort(ip.String(), strconv.Itoa(*r.Port)))
}

func (op *connOp) dial(addr string) {
	c, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		op.in.abort()
		op.fail("refused", dialFailure(err))
		return
	}
	op.mu.Lock()
	if op.aborted {
		op.mu.Unlock()
		c.Close()
		return
	}
	op.conn = c
	op.mu.Unlock()
	op.frame(encodeFrame(proto.Connected, op.stream, doneJSON))
	go op.write(c.(*net.TCPConn))
	op.read(c)
}

// dialFailure says why a dial failed in a few words.
func dialFailure(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("timed out after %v", dialTimeout)
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Err.Error()
	}
	return err.Error()
}

// read forwards what the server sends; its end of file is an empty DATA.
func (op *connOp) read(c net.Conn) {
	switch err := forwardChunks(c, proto.Data, op.stream, op.fl, bufPool, op.frame); err {
	case io.EOF:
		if op.frame(encodeFrame(proto.Data, op.stream, nil)) {
			op.ended1()
		}
	case errSendRefused: // cancelled, or the session ended
	default:
		op.broken(err)
	}
}

// write forwards the host's bytes; the host's empty DATA shuts down the
// connection's sending side.
func (op *connOp) write(c *net.TCPConn) {
	switch err := op.in.run(c, c.CloseWrite); err {
	case nil:
		op.ended1()
	case errQueueAborted:
	default:
		op.broken(err)
	}
}

// ended1: one direction reached its end; after both, the stream is DONE.
func (op *connOp) ended1() {
	op.mu.Lock()
	op.ended++
	both := op.ended == 2
	op.mu.Unlock()
	if both {
		op.close()
		op.finish(proto.Done, doneJSON)
	}
}

func (op *connOp) broken(err error) {
	op.close()
	op.in.abort()
	op.fail("io", err.Error())
}

// close closes the connection, now or as soon as the dial returns.
func (op *connOp) close() {
	op.mu.Lock()
	op.aborted = true
	c := op.conn
	op.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

func (op *connOp) handle(f Frame) {
	if f.Type == proto.Data && !op.in.push(f.Payload, op.s.hostGone) {
		op.s.end() // the host left while the queue was full
	}
}

func (op *connOp) abort() {
	op.stop()
	op.in.abort()
	op.close()
}
