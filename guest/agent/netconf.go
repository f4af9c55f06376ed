package main

// The box's network interface, configured from the kernel command line
// (microbox.net=IFACE,ADDR/PREFIX,GATEWAY; docs/protocol.md, "Boot
// parameters") before any host connects: an address, the interface up, and
// a default route. Plain ioctls, as the kernel offers them without netlink.
// A box without the parameter has no network device and nothing is done.
// microbox.dns=ADDR names the box's resolver, written to /etc/resolv.conf (a
// --net tap box's on its gateway; a --net user box's on its own loopback,
// where nothing answers, so that a lookup fails at once).
// microbox.hosts=NAME:ADDR adds "ADDR NAME" to /etc/hosts (the host by name,
// host.microbox.internal on the gateway: docs/net.md, "Host services").

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

type netConfig struct {
	iface   string
	addr    net.IP // IPv4
	mask    net.IPMask
	gateway net.IP
}

// parseNet reads the value of microbox.net=.
func parseNet(v string) (netConfig, error) {
	parts := strings.Split(v, ",")
	if len(parts) != 3 || parts[0] == "" || len(parts[0]) >= syscall.IFNAMSIZ {
		return netConfig{}, fmt.Errorf("microbox.net=%q: want IFACE,ADDR/PREFIX,GATEWAY", v)
	}
	ip, ipnet, err := net.ParseCIDR(parts[1])
	gw := net.ParseIP(parts[2])
	if err != nil || ip.To4() == nil || gw == nil || gw.To4() == nil {
		return netConfig{}, fmt.Errorf("microbox.net=%q: want IPv4 ADDR/PREFIX and GATEWAY", v)
	}
	return netConfig{iface: parts[0], addr: ip.To4(), mask: ipnet.Mask, gateway: gw.To4()}, nil
}

type sockaddrIn struct {
	family uint16
	port   [2]byte
	addr   [4]byte
	_      [8]byte
}

func inet(ip net.IP) sockaddrIn {
	s := sockaddrIn{family: syscall.AF_INET}
	copy(s.addr[:], ip.To4())
	return s
}

// ifreqAddr is struct ifreq with the ifr_addr member of its union.
type ifreqAddr struct {
	name [syscall.IFNAMSIZ]byte
	addr sockaddrIn
	_    [40 - syscall.IFNAMSIZ - 16]byte
}

// rtentry is struct rtentry of <net/route.h> (64-bit layout).
type rtentry struct {
	pad1    uintptr
	dst     sockaddrIn
	gateway sockaddrIn
	genmask sockaddrIn
	flags   uint16
	pad2    int16
	pad3    uintptr
	pad4    uintptr
	metric  int16
	dev     uintptr
	mtu     uintptr
	window  uintptr
	irtt    uint16
}

// ioctlPtr passes arg as a pointer the kernel reads and writes (the
// conversion to uintptr happens in the Syscall call itself, as unsafe's rules
// ask).
func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

func setIfAddr(fd int, name string, req uintptr, ip net.IP) error {
	var r ifreqAddr
	copy(r.name[:syscall.IFNAMSIZ-1], name)
	r.addr = inet(ip)
	return ioctlPtr(fd, req, unsafe.Pointer(&r))
}

// configureNet gives the interface its address and brings it up, then adds
// the default route. The device may still be probing: wait briefly for it.
func configureNet(c netConfig) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	deadline := time.Now().Add(2 * time.Second)
	for {
		err = setIfAddr(fd, c.iface, syscall.SIOCSIFADDR, c.addr)
		if err != syscall.ENODEV || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("address of %s: %v", c.iface, err)
	}
	if err := setIfAddr(fd, c.iface, syscall.SIOCSIFNETMASK, net.IP(c.mask)); err != nil {
		return fmt.Errorf("netmask of %s: %v", c.iface, err)
	}
	// No microbox network carries IPv6 (docs/net.md), as Docker's default
	// networks do not: without this, the link-local address's duplicate
	// detection, MLD and router solicitation ran on after boot, and every
	// clone restored from a template saved in the middle of them ran them again
	// (~1,300 translated blocks under TCG before the agent answered).
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+c.iface+"/disable_ipv6",
		[]byte("1\n"), 0); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("disable IPv6 on %s: %v", c.iface, err)
	}
	if err := interfaceUp(c.iface); err != nil {
		return fmt.Errorf("bring %s up: %v", c.iface, err)
	}
	rt := rtentry{dst: inet(net.IPv4zero), gateway: inet(c.gateway), genmask: inet(net.IPv4zero),
		flags: syscall.RTF_UP | syscall.RTF_GATEWAY}
	if err := ioctlPtr(fd, syscall.SIOCADDRT, unsafe.Pointer(&rt)); err != nil && err != syscall.EEXIST {
		return fmt.Errorf("default route via %s: %v", c.gateway, err)
	}
	return nil
}

// writeResolvConf points the box's resolver at addr (an IPv4 address).
func writeResolvConf(path, addr string) error {
	ip := net.ParseIP(addr)
	if ip == nil || ip.To4() == nil {
		return fmt.Errorf("microbox.dns=%q: want an IPv4 address", addr)
	}
	return replaceFile(path, []byte("# written by microbox (docs/net.md)\nnameserver "+
		ip.To4().String()+"\n"), 0o644)
}

// hostsMark ends the line microbox adds to /etc/hosts, so a later boot
// replaces it rather than adding another.
const hostsMark = "# added by microbox"

// writeHostsEntry makes path hold "ADDR NAME" (from NAME:ADDR) once, keeping
// every other line of the image's file.
func writeHostsEntry(path, entry string) error {
	name, addr, ok := strings.Cut(entry, ":")
	ip := net.ParseIP(addr)
	if !ok || name == "" || strings.ContainsAny(name, " \t\n#") || ip == nil {
		return fmt.Errorf("microbox.hosts=%q: want NAME:ADDR", entry)
	}
	cur, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	var keep []string
	for _, line := range strings.Split(strings.TrimRight(string(cur), "\n"), "\n") {
		if line != "" && !strings.HasSuffix(line, hostsMark) {
			keep = append(keep, line)
		}
	}
	keep = append(keep, ip.String()+"\t"+name+"\t"+hostsMark)
	return replaceFile(path, []byte(strings.Join(keep, "\n")+"\n"), 0o644)
}
