package main

// `microbox-shim -pipe SOCKET`: QEMU's user-mode stack runs this once per
// guest connection to the proxy's address (guestfwd ...-cmd:), with the
// connection as fds 0, 1 and 2. It carries the bytes to and from the Unix
// socket the box's shim listens on, passes each side's end of input on as
// a half-close, and exits once both directions have ended or either side
// fails. When the VM exits, its shim does too, which closes the socket: no
// pipe outlives its box.

import (
	"net"
	"os"
	"syscall"
	"time"
)

func runPipe(path string) int {
	// fd 2 is the guest's connection too: nothing may ever be written there.
	if null, err := syscall.Open("/dev/null", syscall.O_WRONLY|syscall.O_CLOEXEC, 0); err == nil {
		_ = syscall.Dup3(null, 2, 0)
		syscall.Close(null)
	}
	guest, err := stdioConn()
	if err != nil {
		return 1
	}
	box, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		guest.Close() // the box's shim is gone: the guest sees the connection end
		return 1
	}
	relay(guest, guest, box)
	return 0
}

// stdioConn takes fd 0 (a socket) as a net.Conn and closes fds 0 and 1, so
// that closing the Conn really ends the connection.
func stdioConn() (net.Conn, error) {
	f := os.NewFile(0, "guest")
	c, err := net.FileConn(f) // a dup
	f.Close()
	if err != nil {
		return nil, err
	}
	if null, err := syscall.Open("/dev/null", syscall.O_RDWR|syscall.O_CLOEXEC, 0); err == nil {
		_ = syscall.Dup3(null, 0, 0)
		_ = syscall.Dup3(null, 1, 0)
		syscall.Close(null)
	}
	return c, nil
}
