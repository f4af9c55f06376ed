package main

// Extraction of a tar stream into a directory without ever following a
// symbolic link: every path is walked one component at a time from the
// destination's descriptor with openat(O_NOFOLLOW), so a link met on the
// way (one the tar just made, or one already there) stops the extraction
// instead of leading outside. Files, links and nodes are made under a
// temporary name and renamed into place, replacing what was there.

import (
	"archive/tar"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

type dirTime struct {
	parts []string
	mtime time.Time
}

type extractor struct {
	root int       // the destination directory
	dirs []dirTime // set last: making entries changes a directory's mtime
}

func (x *extractor) all(tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return tarStreamErr(err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
	}
}

func tarStreamErr(err error) error {
	if err == errQueueAborted {
		return err
	}
	if err == io.ErrUnexpectedEOF {
		return opErr("invalid", "the tar stream ended in the middle of an entry")
	}
	return opErr("invalid", "bad tar stream: "+err.Error())
}

// entryPath splits an entry name into components; absolute names and ".."
// are refused.
func entryPath(name string) ([]string, error) {
	if strings.HasPrefix(name, "/") {
		return nil, opErr("invalid", fmt.Sprintf("tar entry %q has an absolute name", name))
	}
	var parts []string
	for _, p := range strings.Split(name, "/") {
		switch p {
		case "", ".":
			continue
		case "..":
			return nil, opErr("invalid", fmt.Sprintf("tar entry %q goes up with ..", name))
		}
		parts = append(parts, p)
	}
	return parts, nil
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse, tar.TypeSymlink, tar.TypeLink,
		tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		return nil // global pax headers and the like
	}
	parts, err := entryPath(hdr.Name)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		if hdr.Typeflag == tar.TypeDir {
			return nil // the destination itself keeps its mode and owner
		}
		return opErr("invalid", fmt.Sprintf("tar entry %q names the destination directory", hdr.Name))
	}
	parent, err := x.openDir(parts[:len(parts)-1], true)
	if err != nil {
		return err
	}
	defer syscall.Close(parent)
	base := parts[len(parts)-1]
	mode := uint32(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.dir(parent, parts, hdr, mode)
	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return opErr("invalid", fmt.Sprintf("symlink %q has no target", hdr.Name))
		}
		return x.place(parent, base, hdr, func(tmp string) error {
			return symlinkat(hdr.Linkname, parent, tmp)
		})
	case tar.TypeLink:
		target, err := entryPath(hdr.Linkname)
		if err != nil || len(target) == 0 {
			return opErr("invalid", fmt.Sprintf("hard link %q to %q", hdr.Name, hdr.Linkname))
		}
		tdir, err := x.openDir(target[:len(target)-1], false)
		if err != nil {
			return err
		}
		defer syscall.Close(tdir)
		return x.renameInto(parent, base, func(tmp string) error {
			return linkat(tdir, target[len(target)-1], parent, tmp)
		})
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := map[byte]uint32{tar.TypeChar: syscall.S_IFCHR, tar.TypeBlock: syscall.S_IFBLK,
			tar.TypeFifo: syscall.S_IFIFO}[hdr.Typeflag]
		dev := mkdev(uint64(hdr.Devmajor), uint64(hdr.Devminor))
		return x.place(parent, base, hdr, func(tmp string) error {
			if err := syscall.Mknodat(parent, tmp, kind|0o600, int(dev)); err != nil {
				return err
			}
			return syscall.Fchmodat(parent, tmp, mode, 0) // a node, not a link: nothing to follow
		})
	}
	return x.file(parent, base, hdr, mode, r)
}

// openDir opens the directory at parts below the destination, walking one
// component at a time without following links; with create, missing
// directories are made (0755).
func (x *extractor) openDir(parts []string, create bool) (int, error) {
	fd, err := syscall.Openat(x.root, ".", syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for i, p := range parts {
		next, err := openDirAt(fd, p)
		if err == syscall.ENOENT && create {
			if err = syscall.Mkdirat(fd, p, 0o755); err == nil || err == syscall.EEXIST {
				next, err = openDirAt(fd, p)
			}
		}
		syscall.Close(fd)
		if err != nil {
			return -1, walkErr(strings.Join(parts[:i+1], "/"), err)
		}
		fd = next
	}
	return fd, nil
}

func openDirAt(dir int, name string) (int, error) {
	return syscall.Openat(dir, name, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
}

// walkErr: a component that is a link (ELOOP) or not a directory is refused.
func walkErr(name string, err error) error {
	if err == syscall.ELOOP || err == syscall.ENOTDIR {
		return opErr("invalid", fmt.Sprintf(
			"%s is a symbolic link or a file, not a directory; extraction does not follow links", name))
	}
	return fmt.Errorf("%s: %w", name, err)
}

func (x *extractor) dir(parent int, parts []string, hdr *tar.Header, mode uint32) error {
	base := parts[len(parts)-1]
	if err := syscall.Mkdirat(parent, base, 0o700); err != nil && err != syscall.EEXIST {
		return fmt.Errorf("%s: %w", hdr.Name, err)
	}
	fd, err := openDirAt(parent, base)
	if err != nil {
		return walkErr(strings.Join(parts, "/"), err)
	}
	defer syscall.Close(fd)
	if err := syscall.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("%s: %w", hdr.Name, err)
	}
	if err := syscall.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("%s: %w", hdr.Name, err)
	}
	x.dirs = append(x.dirs, dirTime{parts, hdr.ModTime})
	return nil
}

func (x *extractor) setDirTimes() {
	for i := len(x.dirs) - 1; i >= 0; i-- {
		if fd, err := x.openDir(x.dirs[i].parts, false); err == nil {
			utimensat(fd, "", x.dirs[i].mtime, 0)
			syscall.Close(fd)
		}
	}
}

// file writes a regular file's content under a temporary name, sets its
// owner, mode and mtime, and renames it into place.
func (x *extractor) file(parent int, base string, hdr *tar.Header, mode uint32, r io.Reader) error {
	return x.renameInto(parent, base, func(tmp string) error {
		fd, err := syscall.Openat(parent, tmp,
			syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		src := &readErr{r: r}
		if _, err := io.Copy(fdWriter(fd), src); err != nil {
			if src.err != nil {
				return tarStreamErr(src.err)
			}
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		if err := syscall.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
		if err := syscall.Fchmod(fd, mode); err != nil { // after chown, which clears setuid
			return err
		}
		return utimensat(fd, "", hdr.ModTime, 0)
	})
}

// place makes a link or node with mk, then sets its owner and mtime
// without following it, and renames it into place.
func (x *extractor) place(parent int, base string, hdr *tar.Header, mk func(tmp string) error) error {
	return x.renameInto(parent, base, func(tmp string) error {
		if err := mk(tmp); err != nil {
			return err
		}
		if err := syscall.Fchownat(parent, tmp, hdr.Uid, hdr.Gid, atSymlinkNofollow); err != nil {
			return err
		}
		return utimensat(parent, tmp, hdr.ModTime, atSymlinkNofollow)
	})
}

var tmpSeq atomic.Uint64

// renameInto runs mk on a fresh temporary name in parent and renames the
// result to base; on any failure the temporary entry is removed.
func (x *extractor) renameInto(parent int, base string, mk func(tmp string) error) error {
	tmp := fmt.Sprintf(".microbox-tar-%d", tmpSeq.Add(1))
	err := mk(tmp)
	if err == nil {
		err = syscall.Renameat(parent, tmp, parent, base)
	}
	if err != nil {
		unlinkat(parent, tmp)
		if _, ok := err.(syscall.Errno); ok {
			err = fmt.Errorf("%s: %w", base, err)
		}
	}
	return err
}

// readErr remembers an error of the tar stream, to tell it from a write error.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

type fdWriter int

func (w fdWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k, err := syscall.Write(int(w), p[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}

func unlinkat(dir int, name string) {
	if syscall.Unlinkat(dir, name) != nil {
		p, _ := syscall.BytePtrFromString(name)
		syscall.Syscall(syscall.SYS_UNLINKAT, uintptr(dir), uintptr(unsafe.Pointer(p)), atRemovedir)
	}
}

func symlinkat(target string, dir int, name string) error {
	t, err := syscall.BytePtrFromString(target)
	if err != nil {
		return err
	}
	n, err := syscall.BytePtrFromString(name)
	if err != nil {
		return err
	}
	if _, _, e := syscall.Syscall(syscall.SYS_SYMLINKAT, uintptr(unsafe.Pointer(t)), uintptr(dir),
		uintptr(unsafe.Pointer(n))); e != 0 {
		return e
	}
	return nil
}

// linkat makes a hard link; a symbolic link as the target is linked itself.
func linkat(olddir int, oldname string, newdir int, newname string) error {
	o, err := syscall.BytePtrFromString(oldname)
	if err != nil {
		return err
	}
	n, err := syscall.BytePtrFromString(newname)
	if err != nil {
		return err
	}
	if _, _, e := syscall.Syscall6(syscall.SYS_LINKAT, uintptr(olddir), uintptr(unsafe.Pointer(o)),
		uintptr(newdir), uintptr(unsafe.Pointer(n)), 0, 0); e != 0 {
		return e
	}
	return nil
}

const (
	utimeOmit         = (1 << 30) - 2
	atSymlinkNofollow = 0x100
	atRemovedir       = 0x200
)

// utimensat sets the mtime of name in dir (of dir itself when name is "")
// and leaves the atime alone.
func utimensat(dir int, name string, mtime time.Time, flags int) error {
	var p *byte
	if name != "" {
		var err error
		if p, err = syscall.BytePtrFromString(name); err != nil {
			return err
		}
	}
	sec := mtime.Unix()
	const limit = (1<<63-1)/1000000000 - 1
	if sec > limit {
		sec = limit
	} else if sec < -limit {
		sec = -limit
	}
	ts := [2]syscall.Timespec{{Nsec: utimeOmit}, syscall.NsecToTimespec(sec*1e9 + int64(mtime.Nanosecond()))}
	if _, _, e := syscall.Syscall6(syscall.SYS_UTIMENSAT, uintptr(dir), uintptr(unsafe.Pointer(p)),
		uintptr(unsafe.Pointer(&ts[0])), uintptr(flags), 0, 0); e != 0 {
		return e
	}
	return nil
}

func mkdev(major, minor uint64) uint64 {
	return minor&0xff | (major&0xfff)<<8 | (minor&^0xff)<<12 | (major&^0xfff)<<32
}
