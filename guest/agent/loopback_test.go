package main

import (
	"runtime"
	"syscall"
	"testing"
	"time"
)

// In a new network namespace lo is down, as in a box that just booted.
func TestLoopbackUp(t *testing.T) {
	errc := make(chan error, 1)
	go func() {
		// This thread enters the namespace and is never unlocked: Go ends
		// it with the goroutine instead of reusing it.
		runtime.LockOSThread()
		if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		if up, err := interfaceIsUp("lo"); err != nil || up {
			t.Errorf("lo in a new namespace: up=%v err=%v", up, err)
		}
		if err := interfaceUp("lo"); err != nil {
			errc <- err
			return
		}
		if err := interfaceUp("lo"); err != nil { // already up: no-op
			errc <- err
			return
		}
		if up, err := interfaceIsUp("lo"); err != nil || !up {
			t.Errorf("after interfaceUp: up=%v err=%v", up, err)
		}
		// 127.0.0.1 answers: a listener accepts a connection.
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		if err == nil {
			err = syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
		}
		if err == nil {
			err = syscall.Listen(fd, 1)
		}
		var sa syscall.Sockaddr
		if err == nil {
			sa, err = syscall.Getsockname(fd)
		}
		if err == nil {
			c, _ := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
			err = syscall.Connect(c, sa)
			syscall.Close(c)
		}
		syscall.Close(fd)
		errc <- err
	}()
	select {
	case err := <-errc:
		if err == syscall.EPERM {
			t.Skip("no permission to create a network namespace")
		}
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testTimeout):
		t.Fatal("timed out")
	}
}
