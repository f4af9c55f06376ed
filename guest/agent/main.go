// Command microbox-agent is the guest agent of microbox: /init of the
// initramfs, PID 1 of the microVM. It mounts the root disk, moves it to /,
// reaps zombies and serves protocol v1 (docs/protocol.md) on every
// virtio-serial port named microbox.<N>.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "microbox-agent: this is the guest's init and must run as PID 1")
		os.Exit(2)
	}
	ignoreSignals()
	cfg, err := setupRoot()
	if err != nil {
		fatal(err)
	}
	if err := interfaceUp("lo"); err != nil { // before any host: CONNECT needs it
		consoleLogf("bring lo up: %v", err)
	}
	if cfg.net != "" { // before any host, so no command runs before the network is up
		nc, err := parseNet(cfg.net)
		if err == nil {
			err = configureNet(nc)
		}
		if err != nil {
			consoleLogf("network: %v", err)
		}
	}
	if cfg.dns != "" {
		if err := writeResolvConf("/etc/resolv.conf", cfg.dns); err != nil {
			consoleLogf("resolver: %v", err)
		}
	}
	if cfg.hosts != "" {
		if err := writeHostsEntry("/etc/hosts", cfg.hosts); err != nil {
			consoleLogf("hosts: %v", err)
		}
	}
	a := &Agent{
		Reaper:      startReaper(),
		PasswdPath:  "/etc/passwd",
		GroupPath:   "/etc/group",
		ConsoleFd:   1,
		SetClock:    setClock,
		SetHostname: func(name string) error { return syscall.Sethostname([]byte(name)) },
		AddEntropy:  addEntropy,
		Mount:       func(m boxMount) error { return m.mount("/sys/block") },
		SetMachineID: func(id string) error {
			return writeMachineID("/etc/machine-id", id)
		},
	}
	a.Shutdown = a.powerOff
	a.MainExited = a.mainExited
	if cfg.debug {
		a.Logf = consoleLogf
	}
	go discoverPorts(a, cfg.debug)
	for {
		time.Sleep(time.Hour)
	}
}

// ignoreSignals keeps a "kill -TERM 1" from inside the box from ending the
// agent (Go exits on SIGHUP/SIGINT/SIGTERM by default, and the kernel
// delivers to PID 1 every signal it has a handler for). Notify, not Ignore:
// an ignored disposition would be inherited by every process started.
func ignoreSignals() {
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGABRT, syscall.SIGPWR)
	go func() {
		for range ch {
		}
	}()
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
	msg := fmt.Sprintf("microbox-agent: fatal: %v\n", err)
	if _, werr := os.Stdout.WriteString(msg); werr != nil {
		if fd, oerr := syscall.Open("/dev/console", syscall.O_WRONLY|syscall.O_NOCTTY, 0); oerr == nil {
			syscall.Write(fd, []byte(msg))
		}
	}
	reboot()
}
