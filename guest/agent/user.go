package main

// Users and groups come from the image's /etc/passwd and /etc/group, parsed
// here (os/user would consult the agent's own environment, not the image's).

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// userInfo is what an exec runs as.
type userInfo struct {
	uid, gid uint32
	groups   []uint32 // supplementary groups
	name     string   // USER
	home     string   // HOME
	isRoot   bool     // fast path: uid 0, gid 0, no groups, nothing read
}

var rootUser = userInfo{name: "root", home: "/root", isRoot: true}

type passwdEntry struct {
	name     string
	uid, gid uint32
	home     string
}

// readPasswd parses a passwd file; malformed lines are skipped.
func readPasswd(path string) ([]passwdEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []passwdEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		p := strings.Split(line, ":")
		if len(p) < 6 {
			continue
		}
		uid, err1 := strconv.ParseUint(p[2], 10, 32)
		gid, err2 := strconv.ParseUint(p[3], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, passwdEntry{name: p[0], uid: uint32(uid), gid: uint32(gid), home: p[5]})
	}
	return out, sc.Err()
}

// groupsOf returns the gids of every group in the group file that lists name
// as a member. A missing file means no supplementary groups.
func groupsOf(path, name string) []uint32 {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []uint32
	seen := map[uint32]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		p := strings.Split(line, ":")
		if len(p) < 4 {
			continue
		}
		gid, err := strconv.ParseUint(p[2], 10, 32)
		if err != nil {
			continue
		}
		for _, m := range strings.Split(p[3], ",") {
			if strings.TrimSpace(m) == name && !seen[uint32(gid)] {
				seen[uint32(gid)] = true
				out = append(out, uint32(gid))
			}
		}
	}
	return out
}

func parseID(s string) (uint32, bool) {
	if s == "" {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 32)
	return uint32(v), err == nil
}

// resolveUser turns the EXEC "user" field into credentials: a name from the
// passwd file, "uid", or "uid:gid". "" and "root" take a fast path that reads
// no file. A numeric uid missing from passwd runs with gid 0 (unless given),
// HOME=/ and USER=<uid>.
func resolveUser(spec, passwdPath, groupPath string) (userInfo, error) {
	if spec == "" || spec == "root" {
		return rootUser, nil
	}
	uidPart, gidPart, hasGid := strings.Cut(spec, ":")
	uid, numeric := parseID(uidPart)
	if hasGid && !numeric {
		return userInfo{}, fmt.Errorf("bad user %q: expected a name, uid or uid:gid", spec)
	}
	var gid uint32
	if hasGid {
		g, ok := parseID(gidPart)
		if !ok {
			return userInfo{}, fmt.Errorf("bad user %q: gid must be a number", spec)
		}
		gid = g
	}
	entries, err := readPasswd(passwdPath)
	if err != nil && !numeric {
		return userInfo{}, fmt.Errorf("unknown user %q: %v", spec, err)
	}
	var found *passwdEntry
	for i := range entries {
		e := &entries[i]
		if (numeric && e.uid == uid) || (!numeric && e.name == uidPart) {
			found = e
			break
		}
	}
	if found == nil {
		if !numeric {
			return userInfo{}, fmt.Errorf("unknown user %q: not in %s", spec, passwdPath)
		}
		if uid == 0 && gid == 0 {
			return rootUser, nil
		}
		return userInfo{uid: uid, gid: gid, name: uidPart, home: "/"}, nil
	}
	u := userInfo{uid: found.uid, gid: found.gid, name: found.name, home: found.home}
	if hasGid {
		u.gid = gid
	}
	if u.home == "" {
		u.home = "/"
	}
	u.groups = groupsOf(groupPath, found.name)
	if u.groups == nil {
		u.groups = []uint32{}
	}
	return u, nil
}
