package main

// SHUTDOWN: stop every process, sync, remount the root read-only, answer
// DONE and reset the machine (QEMU runs with -no-reboot, so it exits).

import (
	"microbox/proto"
	"os"
	"sync"
	"syscall"
	"time"
)

var shutdownMu sync.Mutex // never released: the machine goes away

// powerOff is the Agent.Shutdown hook of the real agent (PID 1 only).
func (a *Agent) powerOff(s *Session, stream uint32) {
	if os.Getpid() != 1 {
		s.finish(stream, proto.Error, marshalJSON(errorMsg{Kind: "invalid", Message: "agent is not PID 1"}))
		return
	}
	a.halt()
	s.finish(stream, proto.Done, doneJSON)
	// The frame is in QEMU's hands once write(2) returned; leave it a moment
	// to reach the socket before the reset.
	time.Sleep(20 * time.Millisecond)
	reboot()
}

// mainExited ends the box when its main process (a detached EXEC with
// "main") has exited, as a container ends with its main process. The line on
// the console tells the host that the box stopped rather than crashed.
func (a *Agent) mainExited(ws syscall.WaitStatus) {
	if ws.Signaled() {
		consoleLogf("main process exited: signal=%d", int(ws.Signal()))
	} else {
		consoleLogf("main process exited: code=%d", ws.ExitStatus())
	}
	a.halt()
	reboot()
}

// halt stops every process (TERM, then KILL after 2 s), syncs and remounts
// the root read-only. The caller resets the machine; nothing is released.
func (a *Agent) halt() {
	shutdownMu.Lock()
	syscall.Kill(-1, syscall.SIGTERM)
	if !waitNoChildren(a.Reaper, 2*time.Second) {
		syscall.Kill(-1, syscall.SIGKILL)
		waitNoChildren(a.Reaper, time.Second)
	}
	syscall.Sync()
	a.unmountAll() // a volume unmounted is clean: nothing to replay
	if err := syscall.Mount("", "/", "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		a.logf("remount / read-only: %v", err)
	}
}

// waitNoChildren reaps until the agent has no child left or d passed.
func waitNoChildren(r *Reaper, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for r.Reap() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// reboot resets the machine; as PID 1, returning from main would panic the
// kernel, which also ends the VM (panic=-1), so that is the last resort.
func reboot() {
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART)
	os.Exit(1)
}
