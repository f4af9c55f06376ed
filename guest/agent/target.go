package main

// TAR_GET: a tree (or a single file) out of the guest as a PAX tar stream in
// DATA frames. The walk never follows a symbolic link and stays on the file
// system of the top path: a mount point inside the tree is stored as an
// empty directory, so a tar of / leaves out /proc, /sys, /dev and the tmpfs
// mounts. With `hardlinks` (capability tar_export) the second and later names
// of a regular file are stored as hard links to the first; with `xattrs`,
// each entry carries its extended attributes as SCHILY.xattr.* records
// (xattr.go). Together they are what an export of / needs (`microbox export`).

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"microbox/proto"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"
)

// tarGetOp streams one tree; it takes no frames from the host.
type tarGetOp struct{ *streamOut }

func (tarGetOp) handle(Frame) {}
func (op tarGetOp) abort()    { op.stop() }

type tarGetRequest struct {
	Path      wireString `json:"path"`
	Hardlinks bool       `json:"hardlinks"` // tar_export: hard links as links, not copies
	Xattrs    bool       `json:"xattrs"`    // tar_export: SCHILY.xattr.* records
}

func (s *Session) handleTarGet(stream uint32, payload []byte) {
	var r tarGetRequest
	if !s.decodeRequest(stream, proto.TarGet, payload, &r) {
		return
	}
	path, ok := s.absPath(stream, r.Path)
	if !ok {
		return
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		s.sendError(stream, fileErrKind(err), "%s: %v", path, err)
		return
	}
	if st.Mode&syscall.S_IFMT == syscall.S_IFSOCK {
		s.sendError(stream, "invalid", "%s is a socket", path)
		return
	}
	name := filepath.Base(path)
	if path == "/" {
		name = "."
	}
	out := newStreamOut(s, stream)
	out.fl = s.register(stream, tarGetOp{out})
	w := &treeWalker{dev: st.Dev, xattrs: r.Xattrs}
	if r.Hardlinks {
		w.links = map[fileID]string{}
	}
	go out.sendTree(w, path, name, &st)
}

// sendTree writes the tar of path in DATA frames, then an empty DATA and
// DONE; a failure before any entry is an ERROR of its kind, a failure after
// that an ERROR io (the host discards what it got).
func (o *streamOut) sendTree(w *treeWalker, path, name string, st *syscall.Stat_t) {
	bw := bufio.NewWriterSize(dataWriter{o}, chunkSize)
	tw := tar.NewWriter(bw)
	w.tw = tw
	err := w.entry(path, name, st, true)
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	var oe *opError
	switch {
	case err == nil:
		if o.frame(encodeFrame(proto.Data, o.stream, nil)) {
			o.finish(proto.Done, doneJSON)
		}
	case errors.Is(err, errSendRefused):
		o.s.forget(o.stream) // dead session; after a CANCEL, already forgotten
	case errors.As(err, &oe):
		o.fail(oe.kind, oe.msg)
	default:
		o.fail("io", err.Error())
	}
}

// dataWriter sends what is written to it as DATA frames of this stream.
type dataWriter struct{ o *streamOut }

func (w dataWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := len(p)
		if k > chunkSize {
			k = chunkSize
		}
		k, ok := w.o.fl.take(k)
		if !ok || !w.o.frame(encodeFrame(proto.Data, w.o.stream, p[:k])) {
			return n, errSendRefused
		}
		p, n = p[k:], n+k
	}
	return n, nil
}

type fileID struct{ dev, ino uint64 }

type treeWalker struct {
	tw     *tar.Writer
	dev    uint64            // the file system the walk stays on
	links  map[fileID]string // with hardlinks: the name each linked file was stored under
	xattrs bool              // store extended attributes
}

// entry stores path, whose lstat is st, under name, and a directory's
// entries after it. An entry that cannot be read at all (it vanished) is
// skipped, unless it is the top one: then the error, with its kind, is the
// answer. Errors after a header was written end the walk.
func (w *treeWalker) entry(path, name string, st *syscall.Stat_t, top bool) error {
	skip := func(err error) error {
		if top {
			return opErr(fileErrKind(err), fmt.Sprintf("%s: %v", path, err))
		}
		return nil
	}
	hdr := tarHeader(name, st)
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err != nil {
			return skip(err)
		}
		f := os.NewFile(uintptr(fd), path)
		defer f.Close()
		var fst syscall.Stat_t
		if err := syscall.Fstat(fd, &fst); err != nil || fst.Mode&syscall.S_IFMT != syscall.S_IFREG {
			return skip(syscall.ENOENT) // replaced since the lstat
		}
		hdr = tarHeader(name, &fst)
		if w.links != nil && fst.Nlink > 1 {
			key := fileID{uint64(fst.Dev), fst.Ino}
			if first, ok := w.links[key]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
				return w.tw.WriteHeader(hdr)
			}
			w.links[key] = name
		}
		w.addXattrs(path, hdr)
		if err := w.tw.WriteHeader(hdr); err != nil {
			return err
		}
		if n, err := io.CopyN(w.tw, f, hdr.Size); err != nil {
			if err == io.EOF {
				err = fmt.Errorf("%s shrank to %d bytes while it was read", path, n)
			}
			return err
		}
		return nil
	case syscall.S_IFDIR:
		var names []string
		if top || st.Dev == w.dev {
			fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
			if err != nil {
				return skip(err)
			}
			d := os.NewFile(uintptr(fd), path)
			names, err = d.Readdirnames(-1)
			d.Close()
			if err != nil {
				return skip(err)
			}
			sort.Strings(names)
		}
		w.addXattrs(path, hdr)
		if err := w.tw.WriteHeader(hdr); err != nil {
			return err
		}
		for _, n := range names {
			child := path + "/" + n
			if path == "/" {
				child = "/" + n
			}
			var cst syscall.Stat_t
			if syscall.Lstat(child, &cst) != nil || cst.Mode&syscall.S_IFMT == syscall.S_IFSOCK {
				continue // vanished, or a socket
			}
			if err := w.entry(child, name+"/"+n, &cst, false); err != nil {
				return err
			}
		}
		return nil
	case syscall.S_IFLNK:
		target, err := os.Readlink(path)
		if err != nil {
			return skip(err)
		}
		hdr.Linkname = target
	case syscall.S_IFSOCK:
		return nil
	}
	w.addXattrs(path, hdr)
	return w.tw.WriteHeader(hdr)
}

// tarHeader describes a file of lstat st (not its content) under name.
func tarHeader(name string, st *syscall.Stat_t) *tar.Header {
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(int64(st.Mtim.Sec), int64(st.Mtim.Nsec)),
		Format:  tar.FormatPAX,
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = st.Size
	case syscall.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case syscall.S_IFLNK:
		hdr.Typeflag = tar.TypeSymlink
	case syscall.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	case syscall.S_IFCHR, syscall.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		dev := uint64(st.Rdev)
		hdr.Devmajor = int64((dev>>8)&0xfff | (dev>>32)&^0xfff)
		hdr.Devminor = int64(dev&0xff | (dev>>12)&^0xff)
	}
	return hdr
}
