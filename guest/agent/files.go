package main

// PUT and GET: copy files into and out of the guest.

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"microbox/proto"
	"os"
	"path/filepath"
	"syscall"
)

// fileErrKind maps a file system error to an ERROR kind.
func fileErrKind(err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		if errors.Is(err, fs.ErrNotExist) {
			return "not_found"
		}
		return "io"
	}
	switch errno {
	case syscall.ENOENT, syscall.ENOTDIR:
		return "not_found"
	case syscall.EISDIR:
		return "is_directory"
	case syscall.EACCES, syscall.EPERM, syscall.EROFS:
		return "permission"
	}
	return "io"
}

type putRequest struct {
	Path   wireString `json:"path"`
	Mode   *uint32    `json:"mode"`
	Mkdirs bool       `json:"mkdirs"`
}

// putOp receives the DATA frames of one PUT into a temporary file beside the
// target, renamed into place on the empty DATA.
type putOp struct {
	s      *Session
	fl     *flow
	stream uint32
	f      *os.File
	path   string
	mode   os.FileMode
}

// decodeRequest reads the JSON payload of a request of type t into v; when it
// cannot, the stream is answered with ERROR invalid and false returned.
func (s *Session) decodeRequest(stream uint32, t byte, payload []byte, v interface{}) bool {
	if err := json.Unmarshal(payload, v); err != nil {
		s.sendError(stream, "invalid", "bad %s request: %v", typeName(t), err)
		return false
	}
	return true
}

// absPath is p cleaned, or, when p is not absolute, false after ERROR invalid.
func (s *Session) absPath(stream uint32, p wireString) (string, bool) {
	if !filepath.IsAbs(string(p)) {
		s.sendError(stream, "invalid", "path must be absolute: %q", p)
		return "", false
	}
	return filepath.Clean(string(p)), true
}

func (s *Session) handlePut(stream uint32, payload []byte) {
	var r putRequest
	if !s.decodeRequest(stream, proto.Put, payload, &r) {
		return
	}
	path, ok := s.absPath(stream, r.Path)
	if !ok {
		return
	}
	mode := os.FileMode(0o644)
	if r.Mode != nil {
		mode = os.FileMode(*r.Mode & 0o7777)
	}
	dir := filepath.Dir(path)
	if r.Mkdirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			s.sendError(stream, fileErrKind(err), "%v", err)
			return
		}
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		s.sendError(stream, "is_directory", "%s is a directory", path)
		return
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".microbox-*")
	if err != nil {
		s.sendError(stream, fileErrKind(err), "%v", err)
		return
	}
	op := &putOp{s: s, stream: stream, f: f, path: path, mode: mode}
	op.fl = s.register(stream, op)
}

func (op *putOp) handle(fr Frame) {
	if fr.Type != proto.Data {
		return
	}
	if len(fr.Payload) > 0 {
		if _, err := op.f.Write(fr.Payload); err != nil {
			op.fail(err)
			return
		}
		op.fl.consumed(len(fr.Payload))
		return
	}
	if err := op.f.Chmod(op.mode); err != nil {
		op.fail(err)
		return
	}
	if err := op.f.Close(); err != nil {
		op.fail(err)
		return
	}
	if err := os.Rename(op.f.Name(), op.path); err != nil {
		os.Remove(op.f.Name())
		op.s.finish(op.stream, proto.Error, marshalJSON(errorMsg{Kind: fileErrKind(err), Message: err.Error()}))
		return
	}
	op.s.finish(op.stream, proto.Done, doneJSON)
}

func (op *putOp) fail(err error) {
	op.abort()
	op.s.finish(op.stream, proto.Error, marshalJSON(errorMsg{Kind: fileErrKind(err), Message: err.Error()}))
}

func (op *putOp) abort() {
	op.f.Close()
	os.Remove(op.f.Name())
}

type getRequest struct {
	Path wireString `json:"path"`
}

// getOp streams one file; it takes no frames from the host.
type getOp struct{ *streamOut }

func (getOp) handle(Frame) {}
func (op getOp) abort()    { op.stop() }

func (s *Session) handleGet(stream uint32, payload []byte) {
	var r getRequest
	if err := json.Unmarshal(payload, &r); err != nil || r.Path == "" {
		s.sendError(stream, "invalid", "bad GET request")
		return
	}
	f, err := os.Open(string(r.Path))
	if err != nil {
		s.sendError(stream, fileErrKind(err), "%v", err)
		return
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		s.sendError(stream, fileErrKind(err), "%v", err)
		return
	}
	if st.IsDir() {
		f.Close()
		s.sendError(stream, "is_directory", "%s is a directory", r.Path)
		return
	}
	if !st.Mode().IsRegular() {
		f.Close()
		s.sendError(stream, "io", "%s is not a regular file", r.Path)
		return
	}
	out := newStreamOut(s, stream)
	out.fl = s.register(stream, getOp{out})
	go out.streamFile(f, st)
}

func (o *streamOut) streamFile(f *os.File, st os.FileInfo) {
	defer f.Close()
	mode := uint32(st.Mode().Perm())
	if st.Mode()&os.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if st.Mode()&os.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if st.Mode()&os.ModeSticky != 0 {
		mode |= 0o1000
	}
	if !o.sendJSON(proto.File, fileMsg{Mode: mode, Size: st.Size()}) {
		o.s.forget(o.stream)
		return
	}
	switch err := forwardChunks(f, proto.Data, o.stream, o.fl, bufPool, o.frame); err {
	case io.EOF:
		o.finish(proto.Data, nil)
	case errSendRefused:
		o.s.forget(o.stream) // dead session; after a CANCEL, already forgotten
	default:
		o.fail("io", err.Error())
	}
}
