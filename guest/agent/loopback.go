package main

// The loopback interface comes up DOWN in a fresh kernel and nothing else in
// a box brings it up: CONNECT to 127.0.0.1, and any server in the box that
// listens there, need it. Bringing lo up is enough: the kernel gives it
// 127.0.0.1/8 and ::1 by itself.

import (
	"syscall"
	"unsafe"
)

// ifreqFlags is struct ifreq with the ifr_flags member of its union.
type ifreqFlags struct {
	name  [syscall.IFNAMSIZ]byte
	flags uint16
	_     [40 - syscall.IFNAMSIZ - 2]byte
}

func ifFlags(fd int, name string, req uintptr, flags *uint16) error {
	var r ifreqFlags
	copy(r.name[:syscall.IFNAMSIZ-1], name)
	r.flags = *flags
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(&r))); e != 0 {
		return e
	}
	*flags = r.flags
	return nil
}

// interfaceUp sets IFF_UP on the named interface (SIOCSIFFLAGS) unless it
// is up already.
func interfaceUp(name string) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var flags uint16
	if err := ifFlags(fd, name, syscall.SIOCGIFFLAGS, &flags); err != nil {
		return err
	}
	if flags&syscall.IFF_UP != 0 {
		return nil
	}
	flags |= syscall.IFF_UP
	return ifFlags(fd, name, syscall.SIOCSIFFLAGS, &flags)
}

// interfaceIsUp reads IFF_UP of the named interface.
func interfaceIsUp(name string) (bool, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer syscall.Close(fd)
	var flags uint16
	err = ifFlags(fd, name, syscall.SIOCGIFFLAGS, &flags)
	return flags&syscall.IFF_UP != 0, err
}
