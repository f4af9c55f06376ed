package main

// The default allow hook: the text it gives `nft -f -`, the set names it
// takes, and (with a fake nft) one exec per address it has not added yet.

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNftAddText(t *testing.T) {
	ips := []net.IP{net.ParseIP("1.2.3.4").To4(), net.ParseIP("5.6.7.8")}
	if got := nftAddText("box_1", ips); got != "add element inet microbox box_1 { 1.2.3.4, 5.6.7.8 }\n" {
		t.Fatalf("%q", got)
	}
	for _, name := range []string{"", "1box", "a b", "a;flush ruleset", "a-b", strings.Repeat("a", 65)} {
		if _, err := newNftAllow(name); err == nil {
			t.Errorf("set name %q accepted", name)
		}
	}
}

// The hook runs nft once per new address: a fake nft records its input.
func TestNftAllowCaches(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "input")
	bin := filepath.Join(dir, "nft")
	script := fmt.Sprintf("#!/bin/sh\n[ \"$*\" = \"-f -\" ] || exit 2\ncat >> %s\n", out)
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	a := &nftAllow{set: "s", bin: bin, added: map[string]bool{}}
	ip := func(s string) net.IP { return net.ParseIP(s).To4() }
	for _, batch := range [][]net.IP{{ip("1.2.3.4")}, {ip("1.2.3.4"), ip("5.6.7.8")}, {ip("5.6.7.8")}} {
		if err := a.allow(batch); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(out)
	if want := "add element inet microbox s { 1.2.3.4 }\nadd element inet microbox s { 5.6.7.8 }\n"; string(b) != want {
		t.Fatalf("nft got %q", b)
	}
	a.bin = filepath.Join(dir, "none")
	if err := a.allow([]net.IP{ip("9.9.9.9")}); err == nil {
		t.Fatal("no error without nft")
	}
}
