package main

// Extended attributes of a tree entry for TAR_GET's `xattrs`: read with
// llistxattr/lgetxattr (never through a symbolic link) and stored as PAX
// records SCHILY.xattr.NAME, as GNU tar and Docker write them. What the
// guest kernel cannot read is left out: without CONFIG_EXT4_FS_SECURITY it
// lists no security.* attribute of ext4 (security.capability among them).

import (
	"archive/tar"
	"strings"
	"syscall"
	"unsafe"
)

const xattrMax = 64 * 1024 // XATTR_LIST_MAX and XATTR_SIZE_MAX

// addXattrs adds path's extended attributes to hdr's PAX records, if asked.
func (w *treeWalker) addXattrs(path string, hdr *tar.Header) {
	if !w.xattrs {
		return
	}
	for name, value := range lxattrs(path) {
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+name] = value
	}
}

// lxattrs is every extended attribute of path itself (a link is not
// followed); none when they cannot be read.
func lxattrs(path string) map[string]string {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return nil
	}
	list := xattrCall(func(buf []byte) (uintptr, syscall.Errno) {
		n, _, e := syscall.Syscall(syscall.SYS_LLISTXATTR, uintptr(unsafe.Pointer(p)),
			uintptr(bufPtr(buf)), uintptr(len(buf)))
		return n, e
	})
	if len(list) == 0 {
		return nil
	}
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(list), "\x00"), "\x00") {
		if name == "" || strings.ContainsAny(name, "=") {
			continue // not a name a PAX record can carry
		}
		np, err := syscall.BytePtrFromString(name)
		if err != nil {
			continue
		}
		value := xattrCall(func(buf []byte) (uintptr, syscall.Errno) {
			n, _, e := syscall.Syscall6(syscall.SYS_LGETXATTR, uintptr(unsafe.Pointer(p)),
				uintptr(unsafe.Pointer(np)), uintptr(bufPtr(buf)), uintptr(len(buf)), 0, 0)
			return n, e
		})
		if value != nil {
			out[name] = string(value)
		}
	}
	return out
}

// xattrCall runs a list or get call twice: for the size, then into a buffer
// of that size (again if the attribute grew in between); nil on failure.
func xattrCall(call func(buf []byte) (uintptr, syscall.Errno)) []byte {
	for tries := 0; tries < 3; tries++ {
		n, e := call(nil)
		if e != 0 || n > xattrMax {
			return nil
		}
		buf := make([]byte, n)
		got, e := call(buf)
		if e == syscall.ERANGE {
			continue
		}
		if e != 0 {
			return nil
		}
		return buf[:got]
	}
	return nil
}

// bufPtr is buf's first byte (nil for an empty buf), converted to uintptr
// only in the Syscall's own arguments, as package unsafe requires.
func bufPtr(buf []byte) unsafe.Pointer {
	if len(buf) == 0 {
		return nil
	}
	return unsafe.Pointer(&buf[0])
}
