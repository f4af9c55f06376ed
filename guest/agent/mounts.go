package main

// Host folders and volumes (docs/mounts.md), mounted when the HELLO that boots
// or restores the box names them (its identity field "mounts"), before the
// agent answers: no command ever runs without them. A box restored from a
// template gets them this way too, which a boot parameter could not do. Each
// is a string KIND:SOURCE:MODE:TARGET:
//
//	KIND    9p (a host folder: SOURCE is the virtio-9p mount tag), 9pc (one
//	        the box caches: -v ...:cached), or blk (a volume: SOURCE is the
//	        virtio-blk serial of its disk)
//	MODE    ro or rw
//	TARGET  the absolute path in the box, hex-encoded (any byte may appear)
//
// The target is made (0755) if missing. A target mounted already (a later
// HELLO naming it again) is left as it is. A mount that fails is reported on
// the console; the host checks /proc/mounts after the handshake and fails the
// start.

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

type boxMount struct {
	kind, source, target string
	readOnly             bool
}

// parseMount reads the value of one microbox.mount= parameter.
func parseMount(v string) (boxMount, error) {
	parts := strings.Split(v, ":")
	if len(parts) != 4 || (parts[0] != "9p" && parts[0] != "9pc" && parts[0] != "blk") || parts[1] == "" ||
		(parts[2] != "ro" && parts[2] != "rw") {
		return boxMount{}, fmt.Errorf("microbox.mount=%q: want KIND:SOURCE:MODE:HEXTARGET", v)
	}
	raw, err := hex.DecodeString(parts[3])
	target := filepath.Clean(string(raw))
	if err != nil || !filepath.IsAbs(target) || target == "/" || strings.ContainsRune(target, 0) {
		return boxMount{}, fmt.Errorf("microbox.mount=%q: the target is no absolute path", v)
	}
	return boxMount{kind: parts[0], source: parts[1], target: target, readOnly: parts[2] == "ro"}, nil
}

const maxMounts = 16

// mountAll mounts each of the box's mounts not mounted yet, in order, logging
// failures.
func (a *Agent) mountAll(mounts []boxMount) {
	if len(mounts) == 0 || a.Mount == nil {
		return
	}
	a.mountMu.Lock()
	defer a.mountMu.Unlock()
next:
	for _, m := range mounts {
		for _, done := range a.mounted {
			if done.target == m.target {
				continue next
			}
		}
		if err := a.Mount(m); err != nil {
			consoleLogf("mount %s on %s: %v", m.source, m.target, err)
			continue
		}
		a.mounted = append(a.mounted, m)
	}
}

// unmountAll unmounts what mountAll mounted, the last first.
func (a *Agent) unmountAll() {
	a.mountMu.Lock()
	defer a.mountMu.Unlock()
	for i := len(a.mounted) - 1; i >= 0; i-- {
		if err := syscall.Unmount(a.mounted[i].target, 0); err != nil {
			a.logf("unmount %s: %v", a.mounted[i].target, err)
		}
	}
	a.mounted = nil
}

func (m boxMount) mount(sysBlock string) error {
	if err := os.MkdirAll(m.target, 0o755); err != nil {
		return err
	}
	var flags uintptr = syscall.MS_NOSUID | syscall.MS_NODEV
	if m.readOnly {
		flags |= syscall.MS_RDONLY
	}
	if m.kind == "9p" || m.kind == "9pc" {
		// msize: 512 KiB messages (the default 8 KiB made reads ~10x slower here);
		// access=client with QEMU's mapped-xattr keeps the box's owners and modes;
		// cache=loose (9pc) keeps metadata and data in the box: a second walk of
		// 10,000 files took 0.7 s instead of 5.7 s, at the price of coherence.
		opts := "trans=virtio,version=9p2000.L,msize=524288,access=client"
		if m.kind == "9pc" {
			opts += ",cache=loose"
		}
		return syscall.Mount(m.source, m.target, "9p", flags, opts)
	}
	dev, err := diskBySerial(sysBlock, m.source, 5*time.Second)
	if err != nil {
		return err
	}
	return syscall.Mount(dev, m.target, "ext4", flags, "")
}

// diskBySerial finds /dev/vdX whose virtio-blk serial is serial, waiting
// briefly while the disk may still be probing.
func diskBySerial(sysBlock, serial string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		entries, _ := os.ReadDir(sysBlock)
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(sysBlock, e.Name(), "serial"))
			if err == nil && strings.TrimSpace(string(b)) == serial {
				return "/dev/" + e.Name(), nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no disk with serial %q", serial)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
