package main

// PTY allocation and control through the devpts instance at /dev/pts.

import (
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

type winsize struct {
	rows, cols, xpixel, ypixel uint16
}

func ioctl(fd int, req uint, arg uintptr) error {
	_, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), uintptr(req), arg)
	if e != 0 {
		return e
	}
	return nil
}

// openPTY returns the master (non-blocking, on the Go poller) and the raw
// slave descriptor, both close-on-exec, with the window size set.
func openPTY(rows, cols int) (*os.File, int, error) {
	m, err := syscall.Open("/dev/ptmx", syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, -1, err
	}
	var unlock int32
	var n uint32
	if err := ioctl(m, syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); err != nil {
		syscall.Close(m)
		return nil, -1, err
	}
	if err := ioctl(m, syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); err != nil {
		syscall.Close(m)
		return nil, -1, err
	}
	s, err := syscall.Open("/dev/pts/"+strconv.Itoa(int(n)), syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		syscall.Close(m)
		return nil, -1, err
	}
	ws := winsize{rows: uint16(rows), cols: uint16(cols)}
	if err := ioctl(m, syscall.TIOCSWINSZ, uintptr(unsafe.Pointer(&ws))); err != nil {
		syscall.Close(m)
		syscall.Close(s)
		return nil, -1, err
	}
	return os.NewFile(uintptr(m), "ptmx"), s, nil
}

// withFd runs fn on the descriptor of f while f cannot be closed under it
// (File.Fd would switch the descriptor to blocking mode).
func withFd(f *os.File, fn func(fd int)) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) { fn(int(fd)) })
}

func ptyResize(master *os.File, rows, cols int) {
	ws := winsize{rows: uint16(rows), cols: uint16(cols)}
	withFd(master, func(fd int) { ioctl(fd, syscall.TIOCSWINSZ, uintptr(unsafe.Pointer(&ws))) })
}

// ptyForeground returns the foreground process group of the PTY, or 0.
func ptyForeground(master *os.File) int {
	pg := int32(0)
	withFd(master, func(fd int) {
		if ioctl(fd, syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&pg))) != nil {
			pg = 0
		}
	})
	return int(pg)
}
