package main

// An owner's watch: a box taken from a pool (docs/pool.md) was started by
// another process, so its VMM does not die with the command that now owns it
// (PR_SET_PDEATHSIG is its spawner's). For an attached owner, `run` without
// -d, the shim does it: it holds the read end of a pipe whose only write end
// is the owner's, and when that reads EOF, the owner has exited however it
// did, and the shim SIGKILLs the VMM through a pidfd (no pid can be reused
// under it). The VMM's end then ends the shim as for any box.

import (
	"os"
	"syscall"
)

const sysPidfdSendSignal = 424 // the same number on every architecture

// watchOwner blocks until `owner` reads EOF (or fails), then kills the
// process `vmm` refers to; it returns what pidfd_send_signal said.
func watchOwner(owner *os.File, vmm int) error {
	buf := make([]byte, 64)
	for {
		if _, err := owner.Read(buf); err != nil {
			break
		}
	}
	owner.Close()
	_, _, errno := syscall.Syscall6(sysPidfdSendSignal, uintptr(vmm), uintptr(syscall.SIGKILL),
		0, 0, 0, 0)
	if errno != 0 && errno != syscall.ESRCH {
		return errno
	}
	return nil
}
