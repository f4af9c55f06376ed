package main

// The resolver on a real UDP socket on 127.0.0.1, with the fake host
// resolver of policy_test.go (and a few more names), asked with hand-built
// packets and with Go's own resolver: allowed names get their allowed IPv4
// addresses, after the allow hook saw them; refusals are REFUSED and
// numbered in net.log; malformed packets get FORMERR or nothing.

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

type dnsTest struct {
	addr    string
	logPath string
	lookups *int32
}

func startTestDNS(t *testing.T, f policyFile, allow func([]net.IP) error) dnsTest {
	t.Helper()
	p := testPolicy(t, f)
	table := p.lookup
	var lookups int32
	p.lookup = func(ctx context.Context, name string) ([]net.IPAddr, error) {
		atomic.AddInt32(&lookups, 1)
		var out []net.IPAddr
		switch name {
		case "nosuch.test":
			return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
		case "broken.test":
			return nil, errors.New("the host's resolver is down")
		case "metadata.test":
			out = []net.IPAddr{{IP: net.ParseIP("169.254.169.254")}}
		case "v6only.test":
			out = []net.IPAddr{{IP: net.ParseIP("2001:db8::1")}}
		case "dual.test":
			out = []net.IPAddr{{IP: net.ParseIP("2001:db8::1")}, {IP: net.ParseIP("203.0.113.40")},
				{IP: net.ParseIP("127.0.0.1")}, {IP: net.ParseIP("203.0.113.41")}}
		case "many.test":
			for i := 1; i <= 40; i++ {
				out = append(out, net.IPAddr{IP: net.IPv4(198, 51, 100, byte(i))})
			}
		default:
			return table(ctx, name)
		}
		return out, nil
	}
	dir := t.TempDir()
	log, err := openNetLog(filepath.Join(dir, "net.log"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- newDNSServer(p, log, allow).serve(conn) }()
	t.Cleanup(func() {
		conn.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return dnsTest{conn.LocalAddr().String(), filepath.Join(dir, "net.log"), &lookups}
}

// dnsPacket builds a query of one question for name.
func dnsPacket(id uint16, name string, qtype uint16) []byte {
	b := []byte{byte(id >> 8), byte(id), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0} // RD, one question
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if label != "" {
			b = append(b, byte(len(label)))
			b = append(b, label...)
		}
	}
	b = append(b, 0, byte(qtype>>8), byte(qtype), 0, classIN)
	return b
}

// exchange sends pkt and returns the reply, or nil if none came within wait.
func exchange(t *testing.T, addr string, pkt []byte, wait time.Duration) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

type dnsReply struct {
	id      uint16
	flags   uint16
	rcode   int
	qdcount int
	addrs   []string
}

// readReply checks a reply to query and reads its A records.
func readReply(t *testing.T, b []byte, query []byte) dnsReply {
	t.Helper()
	if len(b) < dnsHeaderLen {
		t.Fatalf("short reply %x", b)
	}
	r := dnsReply{id: binary.BigEndian.Uint16(b), flags: binary.BigEndian.Uint16(b[2:])}
	r.rcode, r.qdcount = int(r.flags&0xf), int(binary.BigEndian.Uint16(b[4:]))
	if r.flags&flagQR == 0 || r.flags&flagRA == 0 || r.flags&flagRD != binary.BigEndian.Uint16(query[2:])&flagRD {
		t.Fatalf("reply flags %04x", r.flags)
	}
	i := dnsHeaderLen
	if r.qdcount == 1 {
		if !strings.HasPrefix(string(b[i:]), string(query[i:])) {
			t.Fatalf("the question is not echoed: %x", b)
		}
		i = len(query)
	}
	for n := int(binary.BigEndian.Uint16(b[6:])); n > 0; n-- {
		want := []byte{0xc0, 0x0c, 0, typeA, 0, classIN, 0, 0, 0, dnsTTL, 0, 4}
		if len(b) < i+dnsAnswerLen || string(b[i:i+12]) != string(want) {
			t.Fatalf("bad answer at %d: %x", i, b)
		}
		r.addrs = append(r.addrs, net.IP(b[i+12:i+16]).String())
		i += dnsAnswerLen
	}
	if i != len(b) {
		t.Fatalf("%d bytes after the answers", len(b)-i)
	}
	return r
}

func ask(t *testing.T, d dnsTest, name string, qtype uint16) dnsReply {
	t.Helper()
	q := dnsPacket(0x1234, name, qtype)
	b := exchange(t, d.addr, q, testTimeout)
	if b == nil {
		t.Fatalf("%s: no reply", name)
	}
	r := readReply(t, b, q)
	if r.id != 0x1234 || r.qdcount != 1 {
		t.Fatalf("%s: id %x, %d questions", name, r.id, r.qdcount)
	}
	return r
}

func netLogLines(t *testing.T, path string) []string {
	t.Helper()
	b, _ := os.ReadFile(path)
	if len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func TestDNSAnswers(t *testing.T) {
	d := startTestDNS(t, policyFile{Hosts: map[string][]string{"stand.in": {"203.0.113.30", "2001:db8::30"}}}, nil)
	cases := []struct {
		name  string
		qtype uint16
		rcode int
		addrs string
	}{
		{"public.test", typeA, rcodeOK, "203.0.113.10"},
		{"PUBLIC.Test.", typeA, rcodeOK, "203.0.113.10"},
		{"dual.test", typeA, rcodeOK, "203.0.113.40,203.0.113.41"}, // no IPv6, no loopback
		{"mixed.test", typeA, rcodeOK, "203.0.113.11"},
		{"v6only.test", typeA, rcodeOK, ""},
		{"public.test", typeAAAA, rcodeOK, ""},
		{"public.test", 16, rcodeOK, ""}, // TXT
		{"nosuch.test", typeA, rcodeNXDomain, ""},
		{"broken.test", typeA, rcodeServFail, ""},
		{"stand.in", typeA, rcodeOK, "203.0.113.30"},
	}
	for _, c := range cases {
		r := ask(t, d, c.name, c.qtype)
		if r.rcode != c.rcode || strings.Join(r.addrs, ",") != c.addrs {
			t.Errorf("%s type %d: rcode %d %v, want %d %q", c.name, c.qtype, r.rcode, r.addrs, c.rcode, c.addrs)
		}
	}
	if lines := netLogLines(t, d.logPath); len(lines) != 0 {
		t.Errorf("net.log: %q", lines)
	}
	before := atomic.LoadInt32(d.lookups)
	ask(t, d, "stand.in", typeA)
	if atomic.LoadInt32(d.lookups) != before {
		t.Error("an --add-host name went to the host's resolver")
	}
}

func TestDNSRefusals(t *testing.T) {
	d := startTestDNS(t, policyFile{AllowHosts: []string{"public.test", "*.test"}}, nil)
	for _, name := range []string{"github.com", "rebind.test", "metadata.test", "bad_name!.test", "github.com"} {
		for _, qtype := range []uint16{typeA, typeAAAA} {
			if qtype == typeAAAA && (name == "rebind.test" || name == "metadata.test") {
				continue // an allowed name: AAAA is not looked up
			}
			if r := ask(t, d, name, qtype); r.rcode != rcodeRefused || len(r.addrs) != 0 {
				t.Errorf("%s type %d: rcode %d %v", name, qtype, r.rcode, r.addrs)
			}
		}
	}
	want := []string{
		"refused #1 github.com (dns): a name not in --allow-host",
		"refused #2 github.com (dns): a name not in --allow-host",
		"refused #3 rebind.test (dns) -> 127.0.0.1: loopback",
		"refused #4 metadata.test (dns) -> 169.254.169.254: cloud metadata",
		"refused #5 bad_name!.test (dns): not a valid host name",
	}
	lines := netLogLines(t, d.logPath)
	if len(lines) != 8 {
		t.Fatalf("net.log:\n%s", strings.Join(lines, "\n"))
	}
	for i, w := range want {
		if !strings.HasSuffix(lines[i], w) {
			t.Errorf("net.log line %d: %q, want ...%q", i+1, lines[i], w)
		}
	}
}

// The hook sees the answer's addresses before the guest does, and only
// when the policy restricts names.
func TestDNSAllowHook(t *testing.T) {
	seen := make(chan []string, 1)
	release := make(chan struct{})
	hook := func(ips []net.IP) error {
		var s []string
		for _, ip := range ips {
			s = append(s, ip.String())
		}
		seen <- s
		<-release
		return nil
	}
	d := startTestDNS(t, policyFile{AllowHosts: []string{"dual.test", "public.test"}}, hook)
	c, err := net.Dial("udp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q := dnsPacket(7, "dual.test", typeA)
	_, _ = c.Write(q)
	select {
	case got := <-seen:
		if want := []string{"203.0.113.40", "203.0.113.41"}; !reflect.DeepEqual(got, want) {
			t.Errorf("the hook saw %v, want %v", got, want)
		}
	case <-time.After(testTimeout):
		t.Fatal("the hook was not called")
	}
	buf := make([]byte, 1024)
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Read(buf); err == nil {
		t.Fatal("a reply before the hook returned")
	}
	close(release)
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if r := readReply(t, buf[:n], q); strings.Join(r.addrs, ",") != "203.0.113.40,203.0.113.41" {
		t.Fatalf("answered %v", r.addrs)
	}
	ask(t, d, "public.test", typeAAAA) // no addresses answered: no hook
	select {
	case got := <-seen:
		t.Fatalf("the hook was called for AAAA: %v", got)
	default:
	}

	unrestricted := startTestDNS(t, policyFile{}, func([]net.IP) error {
		t.Error("the hook was called without restricted names")
		return nil
	})
	if r := ask(t, unrestricted, "public.test", typeA); r.rcode != rcodeOK {
		t.Fatalf("rcode %d", r.rcode)
	}
}

func TestDNSHookFailureIsServFail(t *testing.T) {
	d := startTestDNS(t, policyFile{DenyAll: true, AllowHosts: []string{"public.test"}},
		func([]net.IP) error { return errors.New("nft is not there") })
	if r := ask(t, d, "public.test", typeA); r.rcode != rcodeServFail || len(r.addrs) != 0 {
		t.Fatalf("rcode %d %v", r.rcode, r.addrs)
	}
}

func TestDNSTruncates(t *testing.T) {
	d := startTestDNS(t, policyFile{}, nil)
	q := dnsPacket(1, "many.test", typeA)
	b := exchange(t, d.addr, q, testTimeout)
	r := readReply(t, b, q)
	if len(b) > dnsMaxUDP || r.flags&flagTC == 0 || len(r.addrs) != (dnsMaxUDP-len(q))/dnsAnswerLen {
		t.Fatalf("%d bytes, flags %04x, %d answers", len(b), r.flags, len(r.addrs))
	}
}

func TestDNSMalformed(t *testing.T) {
	d := startTestDNS(t, policyFile{}, nil)
	good := dnsPacket(9, "public.test", typeA)
	with := func(i int, v byte) []byte { b := append([]byte(nil), good...); b[i] = v; return b }
	drop := [][]byte{
		{},
		good[:11],
		with(2, 0x81), // QR: a response
		with(2, 0x09), // OPCODE 1
		with(2, 0x11), // OPCODE 2
	}
	for _, pkt := range drop {
		if b := exchange(t, d.addr, pkt, 100*time.Millisecond); b != nil {
			t.Errorf("%x answered %x", pkt, b)
		}
	}
	formErr := [][]byte{
		good[:12],                       // no question
		with(5, 0),                      // QDCOUNT 0
		with(5, 2),                      // QDCOUNT 2
		good[:len(good)-2],              // no QCLASS
		with(12, 0xc0),                  // a compression pointer
		with(12, 0x40),                  // an extended label type
		with(12, 63),                    // a label past the end
		append(good[:12:12], 0x03, 'a'), // cut in a label
		append(append(good[:12:12], []byte(strings.Repeat("\x3f"+strings.Repeat("a", 63), 4))...), 0, 0, 1, 0, 1), // 257 bytes
	}
	for _, pkt := range formErr {
		b := exchange(t, d.addr, pkt, testTimeout)
		if b == nil {
			t.Fatalf("%x: no reply", pkt)
		}
		r := readReply(t, b, pkt)
		if r.rcode != rcodeFormErr || r.id != 9 || r.qdcount != 0 || len(r.addrs) != 0 {
			t.Errorf("%x: %+v", pkt, r)
		}
	}
	chaos := with(len(good)-1, 3)
	if r := readReply(t, exchange(t, d.addr, chaos, testTimeout), chaos); r.rcode != rcodeNotImp {
		t.Errorf("class CH: rcode %d", r.rcode)
	}
	if r := ask(t, d, "public.test", typeA); r.rcode != rcodeOK { // still serving
		t.Fatalf("after the malformed packets: rcode %d", r.rcode)
	}
}

// Go's own resolver, pointed at the server, gets what a guest's would.
func TestDNSWithGoResolver(t *testing.T) {
	d := startTestDNS(t, policyFile{AllowHosts: []string{"*.test"}}, nil)
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dialer net.Dialer
		return dialer.DialContext(ctx, "udp", d.addr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	addrs, err := r.LookupHost(ctx, "dual.test.")
	sort.Strings(addrs)
	if err != nil || strings.Join(addrs, ",") != "203.0.113.40,203.0.113.41" {
		t.Fatalf("dual.test: %v %v", addrs, err)
	}
	if _, err := r.LookupHost(ctx, "github.com."); err == nil {
		t.Fatal("github.com resolved")
	}
	var dnsErr *net.DNSError
	if _, err := r.LookupHost(ctx, "nosuch.test."); !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Fatalf("nosuch.test: %v", err)
	}
	if lines := netLogLines(t, d.logPath); len(lines) == 0 ||
		!strings.HasSuffix(lines[0], "github.com (dns): a name not in --allow-host") {
		t.Fatalf("net.log: %q", lines)
	}
}

// openDNS takes the inherited socket as main gives it: the fd number.
func TestOpenDNSInheritedFD(t *testing.T) {
	p := testPolicy(t, policyFile{})
	log, err := openNetLog(filepath.Join(t.TempDir(), "net.log"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := conn.(*net.UDPConn).File()
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Dup(int(f.Fd())) // openDNS owns (and closes) the fd it is given
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	d, pc, err := openDNS(p, log, fd, "box_1")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = d.serve(pc) }()
	defer pc.Close()
	if d.allow == nil {
		t.Fatal("no hook with -nft-set")
	}
	q := dnsPacket(5, "public.test", typeA)
	if r := readReply(t, exchange(t, pc.LocalAddr().String(), q, testTimeout), q); r.rcode != rcodeOK {
		t.Fatalf("rcode %d", r.rcode)
	}
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(pair[1])
	if _, _, err := openDNS(p, log, pair[0], ""); err == nil || !strings.Contains(err.Error(), "not a UDP socket") {
		t.Fatalf("a Unix socket: %v", err)
	}
}
