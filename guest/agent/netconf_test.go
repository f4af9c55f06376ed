package main

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

func TestParseNet(t *testing.T) {
	c, err := parseNet("eth0,10.0.2.15/24,10.0.2.2")
	if err != nil || c.iface != "eth0" || !c.addr.Equal(net.IPv4(10, 0, 2, 15)) ||
		net.IP(c.mask).String() != "255.255.255.0" || !c.gateway.Equal(net.IPv4(10, 0, 2, 2)) {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []string{"", "eth0", "eth0,10.0.2.15,10.0.2.2", "eth0,10.0.2.15/24",
		"eth0,fd00::1/64,10.0.2.2", "eth0,10.0.2.15/24,nope", ",10.0.2.15/24,10.0.2.2",
		"averyveryverylongname,10.0.2.15/24,10.0.2.2"} {
		if _, err := parseNet(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if cfg := parseCmdline("quiet microbox.net=eth0,10.0.2.15/24,10.0.2.2"); cfg.net != "eth0,10.0.2.15/24,10.0.2.2" {
		t.Errorf("cmdline: %+v", cfg)
	}
}

func TestRtentryLayout(t *testing.T) {
	if s := unsafe.Sizeof(rtentry{}); s != 120 {
		t.Fatalf("struct rtentry is %d bytes, the kernel's is 120", s)
	}
	if s := unsafe.Sizeof(ifreqAddr{}); s != 40 {
		t.Fatalf("struct ifreq is %d bytes, want 40", s)
	}
}

// In a new network namespace, a TUN device named eth0 stands in for the
// box's virtio-net interface.
func TestConfigureNet(t *testing.T) {
	errc := make(chan error, 1)
	var route string
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		tun, err := syscall.Open("/dev/net/tun", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer syscall.Close(tun)
		var req ifreqFlags
		copy(req.name[:], "eth0")
		req.flags = syscall.IFF_TUN | syscall.IFF_NO_PI
		if err := ioctlPtr(tun, syscall.TUNSETIFF, unsafe.Pointer(&req)); err != nil {
			errc <- err
			return
		}
		c, _ := parseNet("eth0,10.0.2.15/24,10.0.2.2")
		if err := configureNet(c); err != nil {
			errc <- err
			return
		}
		if up, err := interfaceIsUp("eth0"); err != nil || !up {
			t.Errorf("eth0 up=%v err=%v", up, err)
		}
		b, err := os.ReadFile("/proc/thread-self/net/route")
		route = string(b)
		errc <- err
	}()
	select {
	case err := <-errc:
		if err == syscall.EPERM || err == syscall.ENOENT {
			t.Skipf("no network namespace or TUN here: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testTimeout):
		t.Fatal("timed out")
	}
	// Iface Destination Gateway Flags ...: default via 10.0.2.2 (little-endian hex),
	// and the /24 the address brought with it.
	if !strings.Contains(route, "eth0\t00000000\t0202000A\t0003") ||
		!strings.Contains(route, "eth0\t0002000A\t00000000\t0001") {
		t.Fatalf("routes:\n%s", route)
	}
}

func TestWriteResolvConf(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	if err := os.Symlink("/nonexistent/stub-resolv.conf", path); err != nil {
		t.Fatal(err)
	}
	if err := writeResolvConf(path, "10.0.2.2"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(got), "\nnameserver 10.0.2.2\n") {
		t.Fatalf("resolv.conf = %q, %v", got, err)
	}
	if fi, _ := os.Lstat(path); fi.Mode()&os.ModeSymlink != 0 {
		t.Fatal("the symlink was kept")
	}
	if err := writeResolvConf(path, "not-an-address"); err == nil {
		t.Fatal("a bad address was written")
	}
	if cfg := parseCmdline("microbox.net=eth0,10.0.2.15/24,10.0.2.2 microbox.dns=10.0.2.2"); cfg.dns != "10.0.2.2" {
		t.Fatalf("dns = %q", cfg.dns)
	}
}

func TestWriteHostsEntry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte("127.0.0.1\tlocalhost\n::1\tlocalhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // a second boot replaces its line
		if err := writeHostsEntry(path, "host.microbox.internal:10.0.2.2"); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(path)
	want := "127.0.0.1\tlocalhost\n::1\tlocalhost\n10.0.2.2\thost.microbox.internal\t# added by microbox\n"
	if string(b) != want {
		t.Fatalf("got %q", b)
	}
	missing := filepath.Join(t.TempDir(), "none")
	if err := writeHostsEntry(missing, "h.test:10.0.2.2"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"nocolon", ":10.0.2.2", "h.test:nope", "a b:10.0.2.2"} {
		if err := writeHostsEntry(missing, bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if cfg := parseCmdline("microbox.hosts=host.microbox.internal:10.0.2.2"); cfg.hosts != "host.microbox.internal:10.0.2.2" {
		t.Errorf("cmdline: %+v", cfg)
	}
}
