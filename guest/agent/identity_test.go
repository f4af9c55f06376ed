package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestWriteMachineID(t *testing.T) {
	const a, b = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
	dir := t.TempDir()
	path := filepath.Join(dir, "machine-id")

	// None there, or one of another length ("uninitialized"): written beside and renamed.
	if err := writeMachineID(path, b); err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	if err := os.WriteFile(path, []byte("uninitialized\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := writeMachineID(path, a); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != a+"\n" {
		t.Fatalf("got %q", got)
	}
	// One of the same length (a template's): overwritten in place.
	before := inode(t, path)
	if err := writeMachineID(path, b); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != b+"\n" || inode(t, path) != before {
		t.Fatalf("got %q, inode %d -> %d", got, before, inode(t, path))
	}
	// A symlink is replaced by a file, never written through.
	target := filepath.Join(dir, "elsewhere")
	if err := os.WriteFile(target, []byte(a+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	if err := writeMachineID(path, b); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Lstat(path)
	got, _ := os.ReadFile(path)
	kept, _ := os.ReadFile(target)
	if !st.Mode().IsRegular() || string(got) != b+"\n" || string(kept) != a+"\n" {
		t.Fatalf("mode %v, got %q, target %q", st.Mode(), got, kept)
	}
}
