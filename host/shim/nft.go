package main

// The resolver's default allow hook (dns.go): it adds the addresses of an
// answer to the box's set in the nftables table `inet microbox` (the host
// made the table, the set and the rules that use it), with `nft -f -` in
// the shim's own network namespace. It remembers what it added, so a name
// asked again costs no exec; adding an element the set has already is no
// error, so forgetting (past nftCacheMax) costs only an exec.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"time"
)

const (
	nftTimeout  = 5 * time.Second
	nftCacheMax = 4096 // addresses remembered as added
	nftTable    = "inet microbox"
)

type nftAllow struct {
	set   string
	bin   string
	mu    sync.Mutex // held across the exec: one nft at a time, no address added twice
	added map[string]bool
}

// newNftAllow returns the hook that fills set.
func newNftAllow(set string) (func([]net.IP) error, error) {
	if !validSetName(set) {
		return nil, fmt.Errorf("-nft-set %q: not a set name (letters, digits, _)", set)
	}
	bin, err := exec.LookPath("nft")
	if err != nil {
		bin = "/usr/sbin/nft" // root's PATH has it; another may not
	}
	a := &nftAllow{set: set, bin: bin, added: map[string]bool{}}
	return a.allow, nil
}

func (a *nftAllow) allow(ips []net.IP) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var fresh []net.IP
	for _, ip := range ips {
		if !a.added[ip.String()] {
			fresh = append(fresh, ip)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), nftTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.bin, "-f", "-")
	cmd.Stdin = strings.NewReader(nftAddText(a.set, fresh))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", a.bin, err, bytes.TrimSpace(out))
	}
	if len(a.added)+len(fresh) > nftCacheMax {
		a.added = map[string]bool{}
	}
	for _, ip := range fresh {
		a.added[ip.String()] = true
	}
	return nil
}

// nftAddText is the input of `nft -f -` that adds ips to set:
//
//	add element inet microbox SET { 1.2.3.4, 5.6.7.8 }
func nftAddText(set string, ips []net.IP) string {
	elems := make([]string, len(ips))
	for i, ip := range ips {
		elems[i] = ip.String()
	}
	return fmt.Sprintf("add element %s %s { %s }\n", nftTable, set, strings.Join(elems, ", "))
}

// validSetName: the set's name goes into nft's input, so only a plain
// identifier will do.
func validSetName(s string) bool {
	if s == "" || len(s) > 64 || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
