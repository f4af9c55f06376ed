package main

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
)

// defaultBlocks is what the host writes for a box without --allow-private
// (src/microbox/net/policy.py); the tests use a copy of it.
var defaultBlocks = []blockRule{
	{"169.254.169.254/32", "cloud metadata"},
	{"0.0.0.0/8", "this-network address (0.0.0.0/8)"},
	{"224.0.0.0/4", "multicast"},
	{"127.0.0.0/8", "loopback"},
	{"::1/128", "loopback"},
	{"10.0.0.0/8", "a private address (RFC 1918)"},
	{"172.16.0.0/12", "a private address (RFC 1918)"},
	{"192.168.0.0/16", "a private address (RFC 1918)"},
	{"100.64.0.0/10", "shared address space (100.64.0.0/10)"},
	{"169.254.0.0/16", "link-local"},
	{"fe80::/10", "link-local"},
	{"fc00::/7", "a unique local address (fc00::/7)"},
}

func testPolicy(t *testing.T, f policyFile) *policy {
	t.Helper()
	f.Version = policyVersion
	if f.Block == nil {
		f.Block = defaultBlocks
		f.BlockHost = true
	}
	p, err := compilePolicy(f)
	if err != nil {
		t.Fatal(err)
	}
	p.hostAddrs = func() []net.IP { return []net.IP{net.ParseIP("192.0.2.2").To4()} }
	p.lookup = func(_ context.Context, name string) ([]net.IPAddr, error) {
		table := map[string][]string{
			"public.test":    {"203.0.113.10"},
			"mixed.test":     {"127.0.0.1", "203.0.113.11"},
			"rebind.test":    {"127.0.0.1"},
			"files.pypi.org": {"203.0.113.20"},
			"pypi.org":       {"203.0.113.21"},
		}
		var out []net.IPAddr
		for _, a := range table[name] {
			out = append(out, net.IPAddr{IP: net.ParseIP(a)})
		}
		if out == nil {
			return nil, errors.New("no such host")
		}
		return out, nil
	}
	return p
}

// decision: a destination, the addresses the policy allows for it (joined by
// ","), or the reason it refuses it.
type decision struct{ dest, addrs, reason string }

func expectDecisions(t *testing.T, p *policy, cases []decision) {
	t.Helper()
	for _, c := range cases {
		addrs, reason := decide(p, c.dest)
		if addrs != c.addrs || reason != c.reason {
			t.Errorf("%s: got (%q, %q), want (%q, %q)", c.dest, addrs, reason, c.addrs, c.reason)
		}
	}
}

func decide(p *policy, dest string) (string, string) {
	ips, err := p.resolve(context.Background(), dest)
	var ref *refusal
	if errors.As(err, &ref) {
		return "", ref.reason
	}
	if err != nil {
		return "", "error: " + err.Error()
	}
	var got []string
	for _, ip := range ips {
		got = append(got, ip.String())
	}
	return strings.Join(got, ","), ""
}

func TestDefaultPolicy(t *testing.T) {
	p := testPolicy(t, policyFile{})
	cases := []decision{
		{"public.test:80", "203.0.113.10", ""},
		{"203.0.113.10:443", "203.0.113.10", ""},
		{"127.0.0.1:22", "", "loopback"},
		{"127.1.2.3:22", "", "loopback"},
		{"[::1]:22", "", "loopback"},
		{"[::ffff:127.0.0.1]:22", "", "loopback"},
		{"10.1.2.3:80", "", "a private address (RFC 1918)"},
		{"172.20.0.1:80", "", "a private address (RFC 1918)"},
		{"192.168.1.1:80", "", "a private address (RFC 1918)"},
		{"100.100.100.100:80", "", "shared address space (100.64.0.0/10)"},
		{"169.254.169.254:80", "", "cloud metadata"},
		{"169.254.1.1:80", "", "link-local"},
		{"[fe80::1]:80", "", "link-local"},
		{"[fd00::1]:80", "", "a unique local address (fc00::/7)"},
		{"0.0.0.0:80", "", "this-network address (0.0.0.0/8)"},
		{"224.0.0.1:80", "", "multicast"},
		{"192.0.2.2:80", "", "an address of the host"},
		{"rebind.test:80", "", "loopback"}, // a name is no way around the address rules
		{"mixed.test:80", "203.0.113.11", ""},
		{"nosuch.test:80", "", "error: nosuch.test:80: no such host"},
		{"bad_name!:80", "", "not a valid host name"},
		{"noport", "", "not a host:port destination"},
	}
	expectDecisions(t, p, cases)
}

func TestAllowHostsRestrictNames(t *testing.T) {
	p := testPolicy(t, policyFile{AllowHosts: []string{"public.test", "*.pypi.org"}})
	cases := []decision{
		{"public.test:80", "203.0.113.10", ""},
		{"PUBLIC.test.:80", "203.0.113.10", ""},
		{"files.pypi.org:443", "203.0.113.20", ""},
		{"pypi.org:443", "", "a name not in --allow-host"}, // *.x is below x only
		{"mixed.test:80", "", "a name not in --allow-host"},
		{"203.0.113.10:80", "", "an address outside --allow-cidr, and only --allow-host names are allowed"},
	}
	expectDecisions(t, p, cases)
}

func TestDenyAllAndAllowCIDR(t *testing.T) {
	p := testPolicy(t, policyFile{DenyAll: true, AllowCIDRs: []string{"10.9.0.0/16", "127.0.0.1/32"},
		AllowHosts: []string{"rebind.test"}})
	cases := []decision{
		{"10.9.1.1:80", "10.9.1.1", ""},   // an explicit allow beats the private block
		{"127.0.0.1:80", "127.0.0.1", ""}, // and the loopback block
		{"127.0.0.2:80", "", "loopback"},  // a block's reason comes first
		{"169.254.169.254:80", "", "cloud metadata"},
		{"203.0.113.10:80", "", "an address outside --allow-cidr, and --deny-all is set"},
		{"public.test:80", "", "a name not in --allow-host"},
		{"rebind.test:80", "127.0.0.1", ""}, // allowed name, allowed address
	}
	expectDecisions(t, p, cases)
}

func TestAllowPrivateKeepsMetadataBlocked(t *testing.T) {
	// --allow-private: the host writes only the blocks it does not lift.
	p := testPolicy(t, policyFile{Block: defaultBlocks[:3]})
	for _, dest := range []string{"127.0.0.1:80", "10.0.0.1:80", "192.0.2.2:80", "169.254.1.1:80"} {
		if _, reason := decide(p, dest); reason != "" {
			t.Errorf("%s refused with --allow-private: %s", dest, reason)
		}
	}
	if _, reason := decide(p, "169.254.169.254:80"); reason != "cloud metadata" {
		t.Errorf("metadata: %q", reason)
	}
}

func TestAddedHostsResolveOnTheHost(t *testing.T) {
	p := testPolicy(t, policyFile{Hosts: map[string][]string{"Stand.In": {"203.0.113.30"},
		"inner.test": {"10.0.0.5"}}})
	if addrs, reason := decide(p, "stand.in:80"); addrs != "203.0.113.30" || reason != "" {
		t.Errorf("stand.in: %q %q", addrs, reason)
	}
	if _, reason := decide(p, "inner.test:80"); reason != "a private address (RFC 1918)" {
		t.Errorf("an added host is still decided by its address: %q", reason)
	}
}

func TestBadPolicyFiles(t *testing.T) {
	for _, f := range []policyFile{
		{Version: 1, AllowCIDRs: []string{"10.0.0.0/33"}},
		{Version: 1, Block: []blockRule{{"nope", "x"}}},
		{Version: 1, Hosts: map[string][]string{"a": {"not-an-ip"}}},
	} {
		if _, err := compilePolicy(f); err == nil {
			t.Errorf("accepted %+v", f)
		}
	}
}
