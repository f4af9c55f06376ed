package main

// PID-1 setup: mount the root disk and make it / for the agent and every
// process it starts. Nothing from the image is executed here.

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
)

type bootConfig struct {
	root, fstype string
	debug        bool
	net          string // microbox.net=IFACE,ADDR/PREFIX,GATEWAY (netconf.go)
	dns          string // microbox.dns=ADDR: the box's resolver (netconf.go)
	hosts        string // microbox.hosts=NAME:ADDR: a line of /etc/hosts (netconf.go)
}

// parseCmdline reads the microbox.* parameters of the kernel command line.
func parseCmdline(cmdline string) bootConfig {
	cfg := bootConfig{root: "/dev/vda", fstype: "ext4"}
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "microbox.root":
			if v != "" {
				cfg.root = v
			}
		case "microbox.rootfstype":
			if v != "" {
				cfg.fstype = v
			}
		case "microbox.debug":
			cfg.debug = v == "1"
		case "microbox.net":
			cfg.net = v
		case "microbox.dns":
			cfg.dns = v
		case "microbox.hosts":
			cfg.hosts = v
		}
	}
	return cfg
}

type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

func (m mountSpec) do() error {
	if err := syscall.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
		return fmt.Errorf("mount %s on %s: %v", m.fstype, m.target, err)
	}
	return nil
}

func mkdirs(paths ...string) error {
	for _, p := range paths {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// ensureStdio gives PID 1 the console as fds 0-2 when the kernel could not
// (an initramfs without /dev/console).
func ensureStdio() {
	fd := -1
	for i := 0; i <= 2; i++ {
		if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(i), syscall.F_GETFD, 0); e == 0 {
			continue
		}
		if fd < 0 {
			var err error
			if fd, err = syscall.Open("/dev/console", syscall.O_RDWR|syscall.O_NOCTTY, 0); err != nil {
				return
			}
		}
		if fd != i {
			syscall.Dup3(fd, i, 0)
		}
	}
	if fd > 2 {
		syscall.Close(fd)
	}
}

const (
	nosuid = syscall.MS_NOSUID
	nodev  = syscall.MS_NODEV
	noexec = syscall.MS_NOEXEC
)

func setupRoot() (bootConfig, error) {
	cfg := bootConfig{root: "/dev/vda", fstype: "ext4"}
	if err := mkdirs("/proc", "/dev", "/newroot"); err != nil {
		return cfg, err
	}
	if err := (mountSpec{"proc", "/proc", "proc", nosuid | nodev | noexec, ""}).do(); err != nil {
		return cfg, err
	}
	if b, err := os.ReadFile("/proc/cmdline"); err == nil {
		cfg = parseCmdline(string(b))
	}
	if err := syscall.Mount("devtmpfs", "/dev", "devtmpfs", nosuid, "mode=0755"); err != nil && err != syscall.EBUSY {
		return cfg, fmt.Errorf("mount devtmpfs on /dev: %v", err)
	}
	ensureStdio()

	// The kernel's background work on a fresh ext4 mount, which every clone
	// of a template saved in the middle of it went on with (disk writes and
	// ~2,000 translated blocks under TCG before the agent answered), is left
	// out: images are made with lazy_itable_init (docs/images.md), so their
	// inode tables are holes that read as zeros already (noinit_itable), and
	// a box's small disk reads its block bitmaps when it first allocates
	// (no_prefetch_block_bitmaps).
	opts := ""
	if cfg.fstype == "ext4" {
		opts = "noinit_itable,no_prefetch_block_bitmaps"
	}
	// The disk may still be probing: retry briefly while it is missing.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Mount(cfg.root, "/newroot", cfg.fstype, 0, opts)
		if err == nil {
			break
		}
		if (err != syscall.ENOENT && err != syscall.ENXIO && err != syscall.ENODEV) || time.Now().After(deadline) {
			return cfg, fmt.Errorf("mount root %s (%s) on /newroot: %v", cfg.root, cfg.fstype, err)
		}
		time.Sleep(5 * time.Millisecond)
	}

	const nr = "/newroot"
	if err := mkdirs(nr+"/proc", nr+"/sys", nr+"/dev", nr+"/tmp", nr+"/run"); err != nil {
		return cfg, fmt.Errorf("root disk: %v", err)
	}
	steps := []mountSpec{
		{"/proc", nr + "/proc", "", syscall.MS_MOVE, ""},
		{"/dev", nr + "/dev", "", syscall.MS_MOVE, ""},
		{"sysfs", nr + "/sys", "sysfs", nosuid | nodev | noexec, ""},
	}
	for _, m := range steps {
		if err := m.do(); err != nil {
			return cfg, err
		}
	}
	if err := mkdirs(nr+"/dev/pts", nr+"/dev/shm"); err != nil {
		return cfg, err
	}
	steps = []mountSpec{
		{"devpts", nr + "/dev/pts", "devpts", nosuid | noexec, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{"tmpfs", nr + "/dev/shm", "tmpfs", nosuid | nodev, "mode=1777"},
		{"tmpfs", nr + "/tmp", "tmpfs", nosuid | nodev, "mode=1777"},
		{"tmpfs", nr + "/run", "tmpfs", nosuid | nodev, "mode=0755"},
	}
	for _, m := range steps {
		if err := m.do(); err != nil {
			return cfg, err
		}
	}
	os.Remove(nr + "/dev/ptmx")
	if err := os.Symlink("pts/ptmx", nr+"/dev/ptmx"); err != nil {
		return cfg, err
	}
	// Best effort: what udev or systemd would normally create.
	for link, target := range map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	} {
		os.Symlink(target, nr+"/dev/"+link)
	}

	if err := syscall.Chdir(nr); err != nil {
		return cfg, err
	}
	if err := syscall.Mount(".", "/", "", syscall.MS_MOVE, ""); err != nil {
		return cfg, fmt.Errorf("move root: %v", err)
	}
	if err := syscall.Chroot("."); err != nil {
		return cfg, fmt.Errorf("chroot: %v", err)
	}
	if err := syscall.Chdir("/"); err != nil {
		return cfg, err
	}
	return cfg, nil
}
