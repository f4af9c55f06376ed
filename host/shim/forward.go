package main

// Port forwards: listening sockets the host bound (and so checked) and passed
// down; each accepted connection becomes a CONNECT stream to a TCP port
// inside the guest. They live as long as the box, not as the command that
// created it.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"microbox/proto"
)

type forward struct {
	ln        net.Listener
	guestPort int
}

func parseForward(spec string) (forward, error) {
	fdText, portText, ok := strings.Cut(spec, ":")
	fd, err1 := strconv.Atoi(fdText)
	guest, err2 := strconv.Atoi(portText)
	if !ok || err1 != nil || err2 != nil || fd < 3 || guest < 1 || guest > 65535 {
		return forward{}, fmt.Errorf("bad -forward %q: want FD:GUESTPORT", spec)
	}
	ln, err := net.FileListener(os.NewFile(uintptr(fd), "forward"))
	if err != nil {
		return forward{}, fmt.Errorf("-forward %s: %w", spec, err)
	}
	return forward{ln: ln, guestPort: guest}, nil
}

func (s *shim) serveForward(f forward) {
	for {
		conn, err := f.ln.Accept()
		if err != nil {
			return
		}
		tcp, ok := conn.(*net.TCPConn)
		if !ok || !s.first.caps[proto.CapConnect] {
			conn.Close() // an agent without CONNECT cannot serve it
			continue
		}
		fc := &fwdConn{conn: tcp, out: newOutbox(0)}
		p := s.pick()
		fc.rt = p.open(proto.Connect, fc, 0)
		body, _ := json.Marshal(map[string]interface{}{"port": f.guestPort})
		go func() {
			_ = fc.out.run(tcp)
			fc.end()
		}()
		if !p.out.push(encode(proto.Connect, fc.rt.gid, body), nil) {
			fc.end()
		}
	}
}

// fwdConn is one forwarded TCP connection: the sink of its CONNECT stream.
type fwdConn struct {
	conn *net.TCPConn
	out  *outbox
	rt   *route
	once sync.Once
}

func (fc *fwdConn) deliver(r *route, f Frame, end bool) {
	switch {
	case f.Type == proto.Connected:
		go fc.pump()
	case f.Type == proto.Data && len(f.Payload) > 0:
		n := len(f.Payload)
		fc.out.push(f.Payload, func() { r.consumed(n) })
	case f.Type == proto.Data: // the guest side closed its end of the stream
		fc.out.push(nil, func() { _ = fc.conn.CloseWrite() })
	}
	if end {
		fc.out.close() // written out, then the connection closes
	}
}

// pump carries the host side's bytes to the guest until it closes its end.
func (fc *fwdConn) pump() {
	p := fc.rt.port
	buf := make([]byte, chunkSize)
	for {
		n, err := fc.conn.Read(buf)
		if n > 0 && !p.send(fc.rt, proto.Data, append([]byte(nil), buf[:n]...)) {
			return
		}
		if err == io.EOF {
			p.send(fc.rt, proto.Data, nil)
			return
		}
		if err != nil {
			fc.end()
			return
		}
	}
}

// end closes the connection and cancels its stream if the guest side still runs.
func (fc *fwdConn) end() {
	fc.once.Do(func() {
		fc.rt.port.cancel(fc.rt)
		fc.out.close()
		fc.conn.Close()
	})
}
