package main

// The egress policy of a box (docs/net.md): which destinations the proxy
// may dial. The host computes it from the box's flags and writes it as JSON
// (<box dir>/net-policy.json); the shim only applies it. Every connection
// is decided here, after the host resolved the name and before it dials.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// policyVersion is the only version of the policy file this shim reads.
const policyVersion = 1

type blockRule struct {
	CIDR   string `json:"cidr"`
	Reason string `json:"reason"`
}

type policyFile struct {
	Version    int                 `json:"version"`
	DenyAll    bool                `json:"deny_all"`
	AllowHosts []string            `json:"allow_hosts"`
	AllowCIDRs []string            `json:"allow_cidrs"`
	Block      []blockRule         `json:"block"`
	BlockHost  bool                `json:"block_host_addresses"`
	Hosts      map[string][]string `json:"hosts"`
	// The host's loopback by name (hostgw.go); absent in files of older hosts.
	HostGateway *hostGatewayFile `json:"host_gateway"`
	// The host's own HTTP proxies (upstream.go); absent: the proxy dials directly.
	Upstream *upstreamFile `json:"upstream"`
}

type blocked struct {
	net    *net.IPNet
	reason string
}

type policy struct {
	denyAll    bool
	names      []string // exact names, and "*.suffix" patterns
	restricted bool     // names not in `names` are refused
	allow      []*net.IPNet
	block      []blocked
	blockHost  bool
	hosts      map[string][]net.IP // --add-host: names the host resolves itself
	gateway    *hostGateway        // host.microbox.internal; nil: no such name
	upstream   *upstream           // the host's proxies; nil: dial directly

	hostAddrs func() []net.IP                                              // the host's own addresses
	lookup    func(ctx context.Context, name string) ([]net.IPAddr, error) // the host's resolver
}

// refusal is a destination the policy does not allow, with the reason.
type refusal struct {
	dest   string
	addr   string
	reason string
}

func (r *refusal) Error() string {
	if r.addr != "" && r.addr != hostOnly(r.dest) {
		return fmt.Sprintf("%s (%s): %s", r.dest, r.addr, r.reason)
	}
	return fmt.Sprintf("%s: %s", r.dest, r.reason)
}

func loadPolicy(path string) (*policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f policyFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if f.Version != policyVersion {
		return nil, fmt.Errorf("%s: policy version %d, this shim reads %d", path, f.Version, policyVersion)
	}
	return compilePolicy(f)
}

func compilePolicy(f policyFile) (*policy, error) {
	p := &policy{denyAll: f.DenyAll, blockHost: f.BlockHost, hosts: map[string][]net.IP{},
		restricted: f.DenyAll || len(f.AllowHosts) > 0, hostAddrs: cachedHostAddrs(),
		lookup: net.DefaultResolver.LookupIPAddr}
	for _, h := range f.AllowHosts {
		p.names = append(p.names, normName(h))
	}
	for _, c := range f.AllowCIDRs {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			return nil, fmt.Errorf("bad allow_cidrs entry %q", c)
		}
		p.allow = append(p.allow, n)
	}
	for _, b := range f.Block {
		_, n, err := net.ParseCIDR(b.CIDR)
		if err != nil {
			return nil, fmt.Errorf("bad block entry %q", b.CIDR)
		}
		p.block = append(p.block, blocked{n, b.Reason})
	}
	var err error
	if p.gateway, err = compileGateway(f.HostGateway); err != nil {
		return nil, err
	}
	if p.upstream, err = compileUpstream(f.Upstream); err != nil {
		return nil, err
	}
	for name, addrs := range f.Hosts {
		for _, a := range addrs {
			ip := net.ParseIP(a)
			if ip == nil {
				return nil, fmt.Errorf("bad hosts entry %s=%q", name, a)
			}
			p.hosts[normName(name)] = append(p.hosts[normName(name)], ip)
		}
	}
	return p, nil
}

func normName(name string) string { return strings.TrimSuffix(strings.ToLower(name), ".") }

// nameAllowed: an exact entry, or "*.suffix" for any name below suffix.
func (p *policy) nameAllowed(name string) bool {
	if !p.restricted {
		return true
	}
	for _, n := range p.names {
		if n == name || (strings.HasPrefix(n, "*.") && strings.HasSuffix(name, n[1:])) {
			return true
		}
	}
	return false
}

// check decides one address. literal: the guest named the address itself.
func (p *policy) check(ip net.IP, literal bool) string {
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	for _, n := range p.allow {
		if n.Contains(ip) {
			return ""
		}
	}
	for _, b := range p.block {
		if b.net.Contains(ip) {
			return b.reason
		}
	}
	if p.blockHost {
		for _, own := range p.hostAddrs() {
			if own.Equal(ip) {
				return "an address of the host"
			}
		}
	}
	if literal && p.restricted { // after the blocks: their reasons say more
		if p.denyAll {
			return "an address outside --allow-cidr, and --deny-all is set"
		}
		return "an address outside --allow-cidr, and only --allow-host names are allowed"
	}
	return ""
}

// resolve decides a destination "host:port" and returns the addresses the
// proxy may dial, or a refusal. Names are resolved here, on the host.
func (p *policy) resolve(ctx context.Context, dest string) ([]net.IP, error) {
	host, _, err := net.SplitHostPort(dest)
	if err != nil {
		return nil, &refusal{dest: dest, reason: "not a host:port destination"}
	}
	if p.gateway.is(host) {
		return p.gateway.decide(dest)
	}
	if ip := net.ParseIP(host); ip != nil {
		if why := p.check(ip, true); why != "" {
			return nil, &refusal{dest: dest, addr: ip.String(), reason: why}
		}
		return []net.IP{ip}, nil
	}
	return p.resolveName(ctx, dest, normName(host))
}

// nameRefusal decides a name before any lookup: nil, or why it is refused.
func (p *policy) nameRefusal(dest, name string) *refusal {
	if !validName(name) {
		return &refusal{dest: dest, reason: "not a valid host name"}
	}
	if !p.nameAllowed(name) {
		return &refusal{dest: dest, reason: "a name not in --allow-host"}
	}
	return nil
}

// resolveName decides a (normalized) name: refused as a name, or resolved on
// the host (--add-host first) and each address decided; the addresses
// allowed, or the first refusal, or a lookupError. The proxy and the box's
// resolver (dns.go) both decide names here. dest names it in a refusal.
func (p *policy) resolveName(ctx context.Context, dest, name string) ([]net.IP, error) {
	if r := p.nameRefusal(dest, name); r != nil {
		return nil, r
	}
	ips, ok := p.hosts[name]
	if !ok {
		found, err := p.lookup(ctx, name)
		if err != nil || len(found) == 0 {
			return nil, &lookupError{dest: dest, err: err}
		}
		for _, a := range found {
			ips = append(ips, a.IP)
		}
	}
	var allowed []net.IP
	var first *refusal
	for _, ip := range ips {
		if why := p.check(ip, false); why != "" {
			if first == nil {
				first = &refusal{dest: dest, addr: ip.String(), reason: why}
			}
			continue
		}
		allowed = append(allowed, ip)
	}
	if len(allowed) == 0 {
		return nil, first
	}
	return allowed, nil
}

// lookupError: the host's resolver found no address (not a refusal).
type lookupError struct {
	dest string
	err  error
}

func (e *lookupError) Unwrap() error { return e.err }

func (e *lookupError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("%s: the host's resolver found no address", e.dest)
	}
	return fmt.Sprintf("%s: %v", e.dest, e.err)
}

func validName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func hostOnly(dest string) string {
	h, _, err := net.SplitHostPort(dest)
	if err != nil {
		return dest
	}
	return h
}

// cachedHostAddrs reads the host's interface addresses at most once a
// second: they can change while a box runs (DHCP, a new interface).
func cachedHostAddrs() func() []net.IP {
	var mu sync.Mutex
	var addrs []net.IP
	var at time.Time
	return func() []net.IP {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) < time.Second && addrs != nil {
			return addrs
		}
		fresh := []net.IP{} // callers may still read the old slice
		if list, err := net.InterfaceAddrs(); err == nil {
			for _, a := range list {
				if n, ok := a.(*net.IPNet); ok {
					ip := n.IP
					if v4 := ip.To4(); v4 != nil {
						ip = v4
					}
					fresh = append(fresh, ip)
				}
			}
		}
		addrs, at = fresh, time.Now()
		return addrs
	}
}
