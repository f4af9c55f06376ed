package main

// The wire format alone: a table of queries, and a fuzz test that no input
// makes the parser, the reply or the whole answer path panic or overflow.

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseQuery(t *testing.T) {
	cases := []struct {
		pkt   []byte
		name  string
		qtype uint16
		err   error
	}{
		{dnsPacket(1, "Public.TEST", typeA), "public.test", typeA, nil},
		{dnsPacket(1, "a.b", typeAAAA), "a.b", typeAAAA, nil},
		{dnsPacket(1, ".", typeA), "", typeA, nil},
		{append(dnsPacket(1, "x.test", typeA), 0, 0, 41, 16, 0, 0, 0, 0, 0, 0), "x.test", typeA, nil}, // trailing OPT
		{append(dnsPacket(1, "", typeA)[:12:12], 3, 'a', '.', 'b', 0, 0, 1, 0, 1), `a\.b`, typeA, nil},
		{append(dnsPacket(1, "", typeA)[:12:12], 1, '\\', 0, 0, 1, 0, 1), `\\`, typeA, nil},
		{dnsPacket(1, strings.Repeat("a.", 126)+"b", typeA), strings.Repeat("a.", 126) + "b", typeA, nil}, // 255 bytes
		{dnsPacket(1, strings.Repeat("a.", 127)+"b", typeA), "", 0, errBadQuestion},                       // 257
		{[]byte{0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1}, "", 0, errNotQuery},
	}
	for i, c := range cases {
		q, err := parseQuery(c.pkt)
		if err != c.err {
			t.Errorf("case %d: %v, want %v", i, err, c.err)
			continue
		}
		if err == nil && (q.name != c.name || q.qtype != c.qtype || q.qclass != classIN || q.id != 1 || !q.rd) {
			t.Errorf("case %d: %+v", i, q)
		}
	}
}

func FuzzParseQuery(f *testing.F) {
	f.Add(dnsPacket(1, "public.test", typeA))
	f.Add(dnsPacket(2, "A.b.C", typeAAAA))
	f.Add([]byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1})
	f.Add([]byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63, 'a'})
	f.Add(append(dnsPacket(3, "x.test", typeA), 0, 0, 41, 16, 0, 0, 0, 0, 0, 0))
	f.Add([]byte{})
	many := make([]net.IP, 40)
	for i := range many {
		many[i] = net.IPv4(198, 51, 100, byte(i))
	}
	// the whole answer path too, with a policy of every kind of rule
	pol, err := compilePolicy(policyFile{Version: policyVersion, AllowHosts: []string{"*.test"},
		Block: defaultBlocks, Hosts: map[string][]string{"stand.test": {"203.0.113.30"}}})
	if err != nil {
		f.Fatal(err)
	}
	pol.hostAddrs = func() []net.IP { return nil }
	pol.lookup = func(_ context.Context, name string) ([]net.IPAddr, error) {
		return []net.IPAddr{{IP: net.IPv4(203, 0, 113, byte(len(name)))}, {IP: net.IPv4(127, 0, 0, 1)}}, nil
	}
	log, err := openNetLog(filepath.Join(f.TempDir(), "net.log"))
	if err != nil {
		f.Fatal(err)
	}
	d := newDNSServer(pol, log, func([]net.IP) error { return nil })
	f.Fuzz(func(t *testing.T, b []byte) {
		if r := d.answer(b); len(r) > dnsMaxUDP {
			t.Fatalf("an answer of %d bytes", len(r))
		}
		q, err := parseQuery(b)
		if errors.Is(err, errNotQuery) {
			return
		}
		if q == nil {
			t.Fatal("no header for a FORMERR")
		}
		rcode := rcodeFormErr
		if err == nil {
			rcode = rcodeOK
			if len(q.question) > dnsMaxName+4 || len(q.name) > 2*dnsMaxName {
				t.Fatalf("question %d bytes, name %d", len(q.question), len(q.name))
			}
		}
		if r := q.reply(rcode, many); len(r) > dnsMaxUDP {
			t.Fatalf("a reply of %d bytes", len(r))
		}
	})
}
