package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseMount(t *testing.T) {
	m, err := parseMount("9p:mb0:ro:2f646174612f78")
	if err != nil || m.kind != "9p" || m.source != "mb0" || m.target != "/data/x" || !m.readOnly {
		t.Fatalf("parseMount = %+v, %v", m, err)
	}
	if m, err = parseMount("9pc:mb1:rw:2f61"); err != nil || m.kind != "9pc" {
		t.Fatalf("parseMount = %+v, %v", m, err)
	}
	m, err = parseMount("blk:mbvol0:rw:2f6d6e74")
	if err != nil || m.kind != "blk" || m.target != "/mnt" || m.readOnly {
		t.Fatalf("parseMount = %+v, %v", m, err)
	}
	for _, bad := range []string{"", "9p:mb0:ro", "nfs:a:ro:2f61", "9p::ro:2f61", "9p:a:rx:2f61",
		"9p:a:ro:zz", "9p:a:ro:61", "9p:a:ro:2f", "9p:a:ro:2f2e2e"} {
		if _, err := parseMount(bad); err == nil {
			t.Errorf("parseMount(%q) took it", bad)
		}
	}
}

func TestDiskBySerial(t *testing.T) {
	dir := t.TempDir()
	for name, serial := range map[string]string{"vda": "", "vdb": "mbvol1\n", "vdc": "mbvol0"} {
		os.MkdirAll(filepath.Join(dir, name), 0o755)
		os.WriteFile(filepath.Join(dir, name, "serial"), []byte(serial), 0o644)
	}
	if dev, err := diskBySerial(dir, "mbvol1", 0); err != nil || dev != "/dev/vdb" {
		t.Fatalf("diskBySerial = %q, %v", dev, err)
	}
	if _, err := diskBySerial(dir, "mbvol9", 10*time.Millisecond); err == nil {
		t.Fatal("found a disk that is not there")
	}
}

func TestMountAllOnceEach(t *testing.T) {
	var calls []string
	a := &Agent{Mount: func(m boxMount) error {
		calls = append(calls, m.target)
		if m.target == "/bad" {
			return os.ErrPermission
		}
		return nil
	}}
	one, _ := parseMount("9p:mb0:rw:2f61")
	bad, _ := parseMount("9p:mb1:rw:2f626164")
	a.mountAll([]boxMount{one, bad})
	a.mountAll([]boxMount{one, bad}) // a later HELLO: /a is mounted, /bad is tried again
	if len(calls) != 3 || calls[0] != "/a" || calls[1] != "/bad" || calls[2] != "/bad" {
		t.Fatalf("mounted %v", calls)
	}
	if len(a.mounted) != 1 {
		t.Fatalf("kept %v", a.mounted)
	}
}
