package main

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

const sysPidfdOpen = 434

// The VMM is SIGKILLed once the last write end of the owner's pipe closes,
// with bytes written on it before.
func TestADepartedOwnerKillsTheVMM(t *testing.T) {
	vmm := exec.Command("sleep", "60")
	if err := vmm.Start(); err != nil {
		t.Fatal(err)
	}
	fd, _, errno := syscall.Syscall(sysPidfdOpen, uintptr(vmm.Process.Pid), 0, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	defer syscall.Close(int(fd))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- watchOwner(r, int(fd)) }()
	// Bytes from the owner are not its end: the watch reads past them. Only
	// the kill on EOF is asserted; that nothing is killed earlier could be
	// seen only against a clock.
	if _, err := w.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	err = vmm.Wait()
	status, ok := err.(*exec.ExitError)
	if !ok || status.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the VMM was not killed: %v", err)
	}
}
