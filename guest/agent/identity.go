package main

// Machine identity applied at every HELLO (capability "identity"): a clone
// restored from a template starts with the template's clock, entropy pool and
// machine-id, so the host hands each box its own before any command runs.

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

const (
	maxEntropy = 512 // bytes of host entropy one HELLO may carry
	// linux/random.h
	rndAddEntropy = 0x40085203 // _IOW('R', 0x03, int[2])
	rndReseedCRNG = 0x5207     // _IO('R', 0x07)
)

// validMachineID: 32 lowercase hex digits, as machine-id(5) requires.
func validMachineID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// addEntropy mixes b into the kernel's pool, credits it, and makes the CRNG
// reseed from it at once, so the next read of /dev/urandom differs from any
// other clone's.
func addEntropy(b []byte) error {
	fd, err := syscall.Open("/dev/urandom", syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(b)+3)
	*(*int32)(unsafe.Pointer(&info[0])) = int32(len(b) * 8)
	*(*int32)(unsafe.Pointer(&info[4])) = int32(len(b))
	copy(info[8:], b)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), rndAddEntropy,
		uintptr(unsafe.Pointer(&info[0]))); e != 0 {
		return fmt.Errorf("RNDADDENTROPY: %v", e)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), rndReseedCRNG, 0); e != 0 {
		return fmt.Errorf("RNDRESEEDCRNG: %v", e)
	}
	return nil
}

// writeMachineID makes path hold id (and a newline). A regular file of that
// length already there (a template's, which every clone of it inherits) is
// overwritten in place: no new inode, rename or block allocation, code that a
// clone would otherwise translate afresh under TCG (~1,000 blocks). The host
// runs nothing before the HELLO reply, so no reader sees it half written.
func writeMachineID(path, id string) error {
	want := []byte(id + "\n")
	if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0); err == nil {
		st, err := f.Stat()
		if err == nil && st.Mode().IsRegular() && st.Size() == int64(len(want)) {
			_, err = f.WriteAt(want, 0)
			if cerr := f.Close(); err == nil && cerr == nil {
				return nil
			}
		} else {
			f.Close()
		}
	}
	return replaceFile(path, want, 0o444)
}

// replaceFile makes path hold want: untouched when it already does, else
// written beside it and renamed over it (a symlink there is replaced).
func replaceFile(path string, want []byte, mode os.FileMode) error {
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, want) {
		return nil
	}
	tmp := path + ".microbox-tmp"
	if err := os.WriteFile(tmp, want, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
