package main

// The DNS resolver of a --net tap box (docs/net.md): the guest's only name
// server, at 10.0.2.2:53 in the box's network namespace. The host binds
// that UDP socket there and hands it to the shim (-dns-fd). Each query is
// decided by the box's policy as the proxy decides a connection: a name
// the policy refuses is answered REFUSED and written to net.log; an allowed
// name is resolved on the host (--add-host first) and answered with the
// IPv4 addresses the policy allows. When names are restricted (--allow-host,
// --deny-all), the box's nftables rules let it reach only the addresses in
// a per-box set, so the answer's addresses go into that set (the allow
// hook, nft.go) before the guest hears of them.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"
)

const (
	dnsMaxInFlight   = 64 // queries answered at once; past it, a query is dropped
	dnsLookupTimeout = 5 * time.Second
	dnsWarnEvery     = 60 // seconds between hook failures written to stderr
)

type dnsServer struct {
	pol    *policy
	log    *netLog
	allow  func([]net.IP) error // nil: none; called only when the policy restricts names
	slots  chan struct{}
	warned int64 // unix time of the last hook failure written to stderr (atomic)
}

func newDNSServer(pol *policy, log *netLog, allow func([]net.IP) error) *dnsServer {
	return &dnsServer{pol: pol, log: log, allow: allow, slots: make(chan struct{}, dnsMaxInFlight)}
}

// openDNS makes the resolver of a tap box on the inherited UDP socket fd,
// with the nftables hook filling set (none if set is "").
func openDNS(pol *policy, log *netLog, fd int, set string) (*dnsServer, net.PacketConn, error) {
	f := os.NewFile(uintptr(fd), "dns")
	pc, err := net.FilePacketConn(f) // a dup: the inherited fd is closed below
	f.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("-dns-fd %d: %v", fd, err)
	}
	if _, ok := pc.(*net.UDPConn); !ok {
		pc.Close()
		return nil, nil, fmt.Errorf("-dns-fd %d: not a UDP socket", fd)
	}
	var allow func([]net.IP) error
	if set != "" {
		if allow, err = newNftAllow(set); err != nil {
			pc.Close()
			return nil, nil, err
		}
	}
	return newDNSServer(pol, log, allow), pc, nil
}

// serve answers queries until conn is closed (then it returns nil).
func (d *dnsServer) serve(conn net.PacketConn) error {
	buf := make([]byte, dnsMaxUDP) // a longer query is cut short; its question comes first
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		select {
		case d.slots <- struct{}{}:
		default:
			continue // too many at once: the guest's resolver asks again
		}
		pkt := append([]byte(nil), buf[:n]...)
		go func() {
			defer func() { <-d.slots }()
			if resp := d.answer(pkt); resp != nil {
				_, _ = conn.WriteTo(resp, from)
			}
		}()
	}
}

// answer decides one query; nil: drop it unanswered.
func (d *dnsServer) answer(pkt []byte) []byte {
	q, err := parseQuery(pkt)
	switch {
	case errors.Is(err, errNotQuery):
		return nil
	case err != nil:
		return q.reply(rcodeFormErr, nil)
	case q.qclass != classIN:
		return q.reply(rcodeNotImp, nil)
	case q.qtype != typeA: // AAAA and the rest: the guest has IPv4 only
		if d.pol.gateway.is(q.name) {
			return q.reply(rcodeOK, nil)
		}
		if r := d.pol.nameRefusal(q.name, q.name); r != nil {
			return d.refuse(q, "", r.reason)
		}
		return q.reply(rcodeOK, nil)
	}
	if g := d.pol.gateway; g.is(q.name) && net.ParseIP(q.name) == nil && g.addr != nil {
		return q.reply(rcodeOK, []net.IP{g.addr}) // whether or not it is allowed: it resolves
	}
	ctx, cancel := context.WithTimeout(context.Background(), dnsLookupTimeout)
	defer cancel()
	ips, err := d.pol.resolveName(ctx, q.name, q.name) // as the proxy decides a name
	var ref *refusal
	var lk *lookupError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &ref):
		return d.refuse(q, ref.addr, ref.reason)
	case errors.As(err, &lk) && lk.err == nil: // no address at all
		return q.reply(rcodeOK, nil)
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return q.reply(rcodeNXDomain, nil)
	case err != nil:
		return q.reply(rcodeServFail, nil)
	}
	var allowed []net.IP
	for _, ip := range ips {
		if v4 := ip.To4(); v4 != nil { // an allowed IPv6 address is not for an A query
			allowed = append(allowed, v4)
		}
	}
	if len(allowed) > 0 && d.pol.restricted && d.allow != nil {
		if err := d.allow(allowed); err != nil {
			d.warn(err)
			return q.reply(rcodeServFail, nil)
		}
	}
	return q.reply(rcodeOK, allowed)
}

// refuse answers REFUSED and writes the refusal to net.log, worded as the
// proxy's: "name (dns): why", or "name (dns) -> address: why".
func (d *dnsServer) refuse(q *dnsQuery, addr, why string) []byte {
	what := q.name
	if what == "" {
		what = "."
	}
	what += " (dns)"
	if addr != "" {
		what += " -> " + addr
	}
	d.log.refused(what + ": " + why)
	return q.reply(rcodeRefused, nil)
}

// warn writes a hook failure to stderr (the shim's log), at most once a
// minute: every query of a guest would repeat it.
func (d *dnsServer) warn(err error) {
	now, last := time.Now().Unix(), atomic.LoadInt64(&d.warned)
	if now-last >= dnsWarnEvery && atomic.CompareAndSwapInt64(&d.warned, last, now) {
		fmt.Fprintln(os.Stderr, "microbox-shim: dns: cannot allow the answer's addresses:", err)
	}
}
