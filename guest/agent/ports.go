package main

// Virtio-serial ports: discovery and the per-port session loop.
//
// drivers/char/virtio_console.c (Linux 6.1): while no host is connected,
// read(2) returns 0 at once and poll(2) reports POLLHUP, so the agent waits
// for a host with O_ASYNC: the driver sends SIGIO when the host side opens or
// closes the port (VIRTIO_CONSOLE_PORT_OPEN) and when data arrives. The
// `name` attribute appears only once the host sent the port's name, so ports
// are rescanned for a while.

import (
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const portsDir = "/sys/class/virtio-ports"

// idleRecheck bounds how long the agent sleeps between looks for new ports,
// and on a port without a host between looks at its connection (SIGIO wakes
// it at once): each wake-up costs an idle box CPU under TCG, and a box's
// shim leaves the ports it does not need unconnected (1 s here made an idle
// box's QEMU use ~0.4% more CPU).
const idleRecheck = 10 * time.Second

func discoverPorts(a *Agent, debug bool) {
	seen := map[string]bool{}
	ready := false
	delay := 2 * time.Millisecond
	for {
		entries, _ := os.ReadDir(portsDir)
		for _, e := range entries {
			dev := e.Name()
			if seen[dev] {
				continue
			}
			b, err := os.ReadFile(portsDir + "/" + dev + "/name")
			if err != nil {
				continue // name not known yet
			}
			name := strings.TrimSpace(string(b))
			if !strings.HasPrefix(name, "microbox.") {
				seen[dev] = true
				continue
			}
			fd, err := syscall.Open("/dev/"+dev, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
			if err != nil {
				a.logf("open /dev/%s (%s): %v", dev, name, err)
				continue
			}
			seen[dev] = true
			go a.servePort(newPort(fd, name, true))
			if debug && !ready {
				ready = true
				consoleLogf("ready")
			}
		}
		time.Sleep(delay)
		if delay < idleRecheck {
			delay *= 2
		}
	}
}

func fcntl(fd int, cmd int, arg int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), uintptr(cmd), uintptr(arg))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func setAsync(fd int, on bool) {
	fl, err := fcntl(fd, syscall.F_GETFL, 0)
	if err != nil {
		return
	}
	if on {
		fl |= syscall.O_ASYNC
	} else {
		fl &^= syscall.O_ASYNC
	}
	fcntl(fd, syscall.F_SETFL, fl)
}

// servePort serves sessions on one port, one host after another.
func (a *Agent) servePort(p *Port) {
	sigio := make(chan os.Signal, 1)
	signal.Notify(sigio, syscall.SIGIO) // before the first read: no lost wakeup
	fcntl(p.fd, syscall.F_SETOWN, os.Getpid())
	for {
		if err := a.ServeSession(p); err != nil {
			a.logf("port %s: %v", p.name, err)
			if err == syscall.ENODEV { // hot-unplugged
				syscall.Close(p.fd)
				return
			}
			time.Sleep(time.Second)
		}
		// The host is gone (or never came). Sleep until SIGIO says the
		// connection state changed; re-check now and then regardless.
		setAsync(p.fd, true)
		for !p.hostConnected() {
			select {
			case <-sigio:
			case <-time.After(idleRecheck):
			}
		}
		setAsync(p.fd, false)
	}
}
