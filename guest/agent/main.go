// Command microbox-agent is the guest agent of microbox: /init of the
// initramfs, PID 1 of the microVM. It mounts the root disk, moves it to /,
// reaps zombies and serves protocol v1 (docs/protocol.md) on every
// virtio-serial port named microbox.<N>.
package main

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "microbox-agent: this is the guest's init and must run as PID 1")
		os.Exit(2)
	}
	cfg, err := setupRoot()
	if err != nil {
		fatal(err)
	}
	a := &Agent{
		Reaper:      startReaper(),
		PasswdPath:  "/etc/passwd",
		GroupPath:   "/etc/group",
		ConsoleFd:   1,
		SetClock:    setClock,
		SetHostname: func(name string) error { return syscall.Sethostname([]byte(name)) },
	}
	a.Shutdown = a.powerOff
	if cfg.debug {
		a.Logf = consoleLogf
	}
	go discoverPorts(a, cfg.debug)
	for {
		time.Sleep(time.Hour)
	}
}

func setClock(ns int64) error {
	tv := syscall.NsecToTimeval(ns)
	return syscall.Settimeofday(&tv)
}

func consoleLogf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stdout, "microbox-agent: "+format+"\n", args...)
}

// fatal reports a setup failure on the console and ends the VM.
func fatal(err error) {
	fmt.Fprintf(os.Stdout, "microbox-agent: fatal: %v\n", err)
	reboot()
}
