package main

import (
	"archive/tar"
	"microbox/proto"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// tarGetExport runs TAR_GET with the tar_export fields.
func (h *testHost) tarGetExport(stream uint32, path string) []tarEntry {
	h.t.Helper()
	h.sendJSON(proto.TarGet, stream, map[string]interface{}{
		"path": path, "hardlinks": true, "xattrs": true})
	raw := h.readData(stream)
	h.expect(proto.Done, stream)
	return readTar(h.t, raw)
}

func byName(es []tarEntry) map[string]tarEntry {
	m := map[string]tarEntry{}
	for _, e := range es {
		m[e.hdr.Name] = e
	}
	return m
}

// With "hardlinks", the second name of a file is a hard link to the first
// (in walk order); without, a copy (TestTarGetTree).
func TestTarGetHardlinks(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeTree(t, root)
	if err := os.Link(filepath.Join(root, "sub", "big"), filepath.Join(root, "sub", "deeper", "big2")); err != nil {
		t.Fatal(err)
	}
	h := newHost(t)
	h.hello()
	es := byName(h.tarGetExport(1, root))
	first, link := es["tree/hardlink"], es["tree/setuid"]
	if first.hdr.Typeflag != tar.TypeReg || string(first.data) != "#!/bin/sh\n" || first.hdr.Mode != 0o4755 {
		t.Fatalf("tree/hardlink: %+v", first.hdr)
	}
	if link.hdr.Typeflag != tar.TypeLink || link.hdr.Linkname != "tree/hardlink" ||
		link.hdr.Size != 0 || len(link.data) != 0 || link.hdr.Mode != 0o4755 {
		t.Fatalf("tree/setuid: %+v", link.hdr)
	}
	big, big2 := es["tree/sub/big"], es["tree/sub/deeper/big2"]
	if big.hdr.Typeflag != tar.TypeReg || len(big.data) != 3*chunkSize+100 || big.hdr.Uid != 1234 {
		t.Fatalf("tree/sub/big: %+v", big.hdr)
	}
	if big2.hdr.Typeflag != tar.TypeLink || big2.hdr.Linkname != "tree/sub/big" {
		t.Fatalf("tree/sub/deeper/big2: %+v", big2.hdr)
	}
	// A file alone is stored whole, whatever its link count.
	if es := h.tarGetExport(2, filepath.Join(root, "setuid")); len(es) != 1 ||
		es[0].hdr.Typeflag != tar.TypeReg || string(es[0].data) != "#!/bin/sh\n" {
		t.Fatalf("top file: %+v", es)
	}
	// A link names its target as the tar names it.
	dir := filepath.Join(root, "sub")
	if es := byName(h.tarGetExport(3, dir+"/")); es["sub/deeper/big2"].hdr.Linkname != "sub/big" {
		t.Fatalf("sub: %+v", es["sub/deeper/big2"].hdr)
	}
}

// With "xattrs", entries carry their extended attributes (binary values
// too) as SCHILY.xattr.* records; without, none.
func TestTarGetXattrs(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeTree(t, root)
	value := "v\x00\xffbinary"
	if err := syscall.Setxattr(filepath.Join(root, "sub", "big"), "user.microbox", []byte(value), 0); err != nil {
		t.Skipf("no user xattrs here: %v", err)
	}
	if err := syscall.Setxattr(filepath.Join(root, "sub"), "user.dir", []byte("d"), 0); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setxattr(filepath.Join(root, "sub", "big"), "trusted.microbox", []byte(""), 0); err != nil {
		t.Logf("no trusted xattrs (not root?): %v", err)
	}
	h := newHost(t)
	h.hello()
	es := byName(h.tarGetExport(1, root))
	big := es["tree/sub/big"].hdr
	if big.PAXRecords["SCHILY.xattr.user.microbox"] != value {
		t.Fatalf("sub/big records %q", big.PAXRecords)
	}
	if v, ok := big.PAXRecords["SCHILY.xattr.trusted.microbox"]; os.Geteuid() == 0 && (!ok || v != "") {
		t.Fatalf("sub/big records %q", big.PAXRecords)
	}
	if es["tree/sub/"].hdr.PAXRecords["SCHILY.xattr.user.dir"] != "d" {
		t.Fatalf("sub/ records %q", es["tree/sub/"].hdr.PAXRecords)
	}
	for _, name := range []string{"tree/rel-link", "tree/fifo", "tree/setuid"} {
		for k := range es[name].hdr.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				t.Fatalf("%s has %s", name, k)
			}
		}
	}
	for _, e := range h.tarGet(2, root) {
		for k := range e.hdr.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				t.Fatalf("%s: %s without xattrs asked for", e.hdr.Name, k)
			}
		}
	}
}
