package main

// A Port is one virtio-serial port (or, in tests, one end of a socketpair)
// seen as a raw blocking file descriptor.

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// maxWrite is what one write(2) to a virtio port accepts at most.
const maxWrite = 32 * 1024

var errHostGone = errors.New("host disconnected")

// Port is a bidirectional byte channel to one host client at a time.
type Port struct {
	fd     int
	name   string
	virtio bool // check host presence before writing (writes block without a host)

	wmu  sync.Mutex // one whole frame per locked write loop
	rbuf []byte
	// heard: bytes came from the host since read(2) last reported its end.
	// The guest learns of a new host's connection (a control message the
	// kernel handles in a work queue) after, at times, that host's first
	// bytes: a reply to them must wait for the connection, not be dropped.
	heard atomic.Bool
}

func newPort(fd int, name string, virtio bool) *Port {
	return &Port{fd: fd, name: name, virtio: virtio, rbuf: make([]byte, chunkSize)}
}

// errStalled: readWithin saw no byte arrive in time.
var errStalled = errors.New("no data within the time limit")

// readWithin is read, but gives up with errStalled when nothing arrives
// within d (d < 0: wait for ever).
func (p *Port) readWithin(d time.Duration) ([]byte, error) {
	if d >= 0 {
		ev, err := p.ppoll(d)
		if err != nil {
			return nil, err
		}
		if ev == 0 {
			return nil, errStalled
		}
	}
	return p.read()
}

// read returns io.EOF when the host is not (or no longer) connected.
func (p *Port) read() ([]byte, error) {
	for {
		n, err := syscall.Read(p.fd, p.rbuf)
		if err == syscall.EINTR || err == syscall.EAGAIN {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			p.heard.Store(false)
			return nil, io.EOF
		}
		p.heard.Store(true)
		return p.rbuf[:n], nil
	}
}

// writeFrame writes one whole frame, looping over short writes. The caller
// holds p.wmu. On a virtio port it gives up (dropping the rest of the frame)
// as soon as no host is connected, because write(2) would block until the
// next host connects and hand it the stale bytes; unless bytes came from a
// host since the last end: then the connection is there (its notice is on
// its way, and write(2) waits for it), and a host gone meanwhile is noticed
// by the reader. A host skips stale bytes before its HELLO's reply.
func (p *Port) writeFrame(b []byte) error {
	for len(b) > 0 {
		if p.virtio && !p.heard.Load() && !p.hostConnected() {
			return errHostGone
		}
		n := len(b)
		if n > maxWrite {
			n = maxWrite
		}
		w, err := syscall.Write(p.fd, b[:n])
		if err == syscall.EINTR || err == syscall.EAGAIN {
			continue
		}
		if err != nil {
			return err
		}
		b = b[w:]
	}
	return nil
}

type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

const (
	pollIn  = 0x1
	pollHup = 0x10
)

// ppoll waits up to d for the port to become readable or hung up and
// returns the events seen (0 on time-out).
func (p *Port) ppoll(d time.Duration) (int16, error) {
	pfd := pollFd{fd: int32(p.fd), events: pollIn}
	ts := syscall.NsecToTimespec(int64(d))
	for {
		_, _, e := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1,
			uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		if e == syscall.EINTR {
			continue // the kernel updated ts to the time left
		}
		if e != 0 {
			return 0, e
		}
		return pfd.revents, nil
	}
}

// hostConnected polls the port without blocking: virtio_console reports
// POLLHUP exactly while no host is connected.
func (p *Port) hostConnected() bool {
	ev, err := p.ppoll(0)
	if err != nil {
		return true // cannot tell; let write(2) decide
	}
	return ev&pollHup == 0
}
