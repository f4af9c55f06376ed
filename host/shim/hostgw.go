package main

// Host services by name (docs/net.md, "Host services"): host.microbox.internal
// is the box's gateway (10.0.2.2, in the guest's /etc/hosts and in a tap
// box's resolver), and the gateway is the host's loopback: a connection to
// either, on any port, goes to 127.0.0.1 on that port, but only when the
// policy allows it (--allow-private, or an --allow-cidr covering the target).
// A --net user box reaches it through its proxy (CONNECT
// host.microbox.internal:PORT, or 10.0.2.2:PORT); a --net tap box's
// namespace redirects every TCP connection to the gateway onto one listener
// the host bound there (-host-fd), and the shim, which runs in the host's
// namespace, dials the host's loopback from there. Otherwise refused,
// naming the flag that allows it, in net.log and (user mode) in the 403.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
)

type hostGatewayFile struct {
	Names   []string `json:"names"`   // host.microbox.internal
	Address string   `json:"address"` // the guest's gateway, 10.0.2.2
	Target  string   `json:"target"`  // the host's loopback, 127.0.0.1
	Allowed bool     `json:"allowed"` // --allow-private (or an --allow-cidr covering target)
}

type hostGateway struct {
	names   map[string]bool // the name(s) and the gateway's address
	addr    net.IP          // the gateway, as a tap box's resolver answers the name
	target  net.IP
	allowed bool
}

func compileGateway(f *hostGatewayFile) (*hostGateway, error) {
	if f == nil {
		return nil, nil
	}
	g := &hostGateway{names: map[string]bool{}, target: net.ParseIP(f.Target), allowed: f.Allowed}
	addr := net.ParseIP(f.Address)
	if g.target == nil || addr == nil {
		return nil, fmt.Errorf("bad host_gateway %q -> %q", f.Address, f.Target)
	}
	g.addr = addr.To4()
	g.names[addr.String()] = true
	for _, n := range f.Names {
		g.names[normName(n)] = true
	}
	return g, nil
}

// is: the destination host (a name or an address) is the host gateway.
func (g *hostGateway) is(host string) bool {
	if g == nil {
		return false
	}
	if ip := net.ParseIP(host); ip != nil {
		return g.names[ip.String()]
	}
	return g.names[normName(host)]
}

// gatewayRefusal is the reason a refused connection to the host is given.
const gatewayRefusal = "the host's loopback (host.microbox.internal), which only --allow-private allows"

func (g *hostGateway) decide(dest string) ([]net.IP, error) {
	if !g.allowed {
		return nil, &refusal{dest: dest, reason: gatewayRefusal}
	}
	return []net.IP{g.target}, nil
}

// toHost reports whether dest ("host:port") is the host gateway: such a
// connection never goes through an upstream proxy.
func (p *policy) toHost(dest string) bool {
	return p.gateway.is(hostOnly(dest))
}

// serveHostGateway accepts the connections a tap box's namespace redirected
// to the gateway's listener and carries each to the host's loopback on the
// port the guest asked for, or refuses it (a reset, and a line in net.log).
func serveHostGateway(pol *policy, log *netLog, ln net.Listener) error {
	slots := make(chan struct{}, proxyMaxConns)
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		select {
		case slots <- struct{}{}:
		default:
			c.Close()
			continue
		}
		go func() {
			defer func() { <-slots }()
			hostGatewayConn(pol, log, c)
		}()
	}
}

func hostGatewayConn(pol *policy, log *netLog, c net.Conn) {
	port, err := originalPort(c)
	if err != nil {
		reset(c)
		return
	}
	dest := net.JoinHostPort("host.microbox.internal", strconv.Itoa(port))
	ips, err := pol.resolve(context.Background(), dest)
	if err != nil {
		var ref *refusal
		if errors.As(err, &ref) {
			log.refused(ref.Error())
		}
		reset(c)
		return
	}
	d := net.Dialer{Timeout: dialTimeout}
	up, err := d.Dial("tcp", net.JoinHostPort(ips[0].String(), strconv.Itoa(port)))
	if err != nil {
		reset(c) // nothing listens there: the guest sees its connection refused
		return
	}
	_ = c.SetDeadline(time.Time{})
	relay(c, c, up)
}

// reset closes with a TCP reset, as a closed port answers.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// originalPort is the destination port a redirected connection had
// (SO_ORIGINAL_DST: a struct sockaddr_in, the port big-endian at bytes 2-3).
func originalPort(c net.Conn) (int, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, errors.New("not a TCP connection")
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var port int
	var gerr error
	err = raw.Control(func(fd uintptr) {
		const soOriginalDst = 80
		mreq, e := syscall.GetsockoptIPv6Mreq(int(fd), syscall.IPPROTO_IP, soOriginalDst)
		if e != nil {
			gerr = e
			return
		}
		port = int(binary.BigEndian.Uint16(mreq.Multiaddr[2:4]))
	})
	if err != nil {
		return 0, err
	}
	return port, gerr
}

// openHostGateway takes the inherited listening socket of a tap box's gateway.
func openHostGateway(fd int) (net.Listener, error) {
	f := os.NewFile(uintptr(fd), "host-gateway")
	ln, err := net.FileListener(f) // a dup: the inherited fd is closed below
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("-host-fd %d: %v", fd, err)
	}
	return ln, nil
}
