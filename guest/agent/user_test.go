package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestResolveUser(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	group := filepath.Join(dir, "group")
	os.WriteFile(passwd, []byte(`root:x:0:0:root:/root:/bin/sh
# comment
broken line
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
bob:x:1001:100::/home/bob:/usr/sbin/nologin
nohome:x:1002:1002:::/bin/false
bad:x:abc:1::/:/bin/sh
`), 0o644)
	os.WriteFile(group, []byte(`root:x:0:
users:x:100:alice
wheel:x:10:bob,alice
audio:x:29: alice
alice:x:1000:
`), 0o644)

	cases := []struct {
		spec string
		want userInfo
		err  bool
	}{
		{"", rootUser, false},
		{"root", rootUser, false},
		{"alice", userInfo{uid: 1000, gid: 1000, groups: []uint32{100, 10, 29}, name: "alice", home: "/home/alice"}, false},
		{"bob", userInfo{uid: 1001, gid: 100, groups: []uint32{10}, name: "bob", home: "/home/bob"}, false},
		{"nohome", userInfo{uid: 1002, gid: 1002, groups: []uint32{}, name: "nohome", home: "/"}, false},
		{"1000", userInfo{uid: 1000, gid: 1000, groups: []uint32{100, 10, 29}, name: "alice", home: "/home/alice"}, false},
		{"1000:5", userInfo{uid: 1000, gid: 5, groups: []uint32{100, 10, 29}, name: "alice", home: "/home/alice"}, false},
		{"4242", userInfo{uid: 4242, gid: 0, name: "4242", home: "/"}, false},
		{"4242:4243", userInfo{uid: 4242, gid: 4243, name: "4242", home: "/"}, false},
		{"0:0", userInfo{uid: 0, gid: 0, groups: []uint32{}, name: "root", home: "/root"}, false},
		{"0", userInfo{uid: 0, gid: 0, groups: []uint32{}, name: "root", home: "/root"}, false},
		{"carol", userInfo{}, true},
		{"bad", userInfo{}, true},
		{"alice:5", userInfo{}, true},
		{"1000:x", userInfo{}, true},
		{"99999999999", userInfo{}, true},
	}
	for _, c := range cases {
		got, err := resolveUser(c.spec, passwd, group)
		if (err != nil) != c.err {
			t.Errorf("%q: error %v", c.spec, err)
			continue
		}
		if !c.err && !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: got %+v, want %+v", c.spec, got, c.want)
		}
	}
	// Without passwd: names fail, numbers work.
	if _, err := resolveUser("alice", filepath.Join(dir, "none"), group); err == nil {
		t.Error("name resolved without a passwd file")
	}
	if u, err := resolveUser("7:8", filepath.Join(dir, "none"), filepath.Join(dir, "none")); err != nil || u.uid != 7 || u.gid != 8 {
		t.Errorf("numeric without passwd: %+v %v", u, err)
	}
}

func TestParseCmdline(t *testing.T) {
	c := parseCmdline("console=ttyS0 panic=-1 microbox.debug=1 microbox.root=/dev/vdb\n")
	if c.root != "/dev/vdb" || c.fstype != "ext4" || !c.debug {
		t.Fatalf("%+v", c)
	}
	c = parseCmdline("quiet microbox.rootfstype=ext2 microbox.debug=0")
	if c.root != "/dev/vda" || c.fstype != "ext2" || c.debug {
		t.Fatalf("%+v", c)
	}
}
