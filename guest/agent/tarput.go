package main

// TAR_PUT: a tar stream in DATA frames extracted into a directory of the
// guest. The DATA go through a byteQueue, as STDIN does, into a pipe that
// the extracting goroutine reads; the port reader never waits for the disk.
// Extraction (extract.go) never follows a symbolic link.

import (
	"archive/tar"
	"errors"
	"io"
	"microbox/proto"
	"syscall"
)

type tarPutOp struct {
	*streamOut
	in *byteQueue
	pr *io.PipeReader
	pw *io.PipeWriter
}

func (s *Session) handleTarPut(stream uint32, payload []byte) {
	var r getRequest
	if !s.decodeRequest(stream, proto.TarPut, payload, &r) {
		return
	}
	path, ok := s.absPath(stream, r.Path)
	if !ok {
		return
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		s.sendError(stream, fileErrKind(err), "%s: %v", path, err)
		return
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		s.sendError(stream, "invalid", "%s is not a directory", path)
		return
	}
	root, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		s.sendError(stream, fileErrKind(err), "%s: %v", path, err)
		return
	}
	pr, pw := io.Pipe()
	op := &tarPutOp{streamOut: newStreamOut(s, stream), pr: pr, pw: pw}
	op.fl = s.register(stream, op)
	op.in = s.newByteQueue(op.fl)
	go func() {
		if err := op.in.run(pw, pw.Close); err != nil {
			pw.CloseWithError(err)
		}
	}()
	go op.extract(root)
}

// extract unpacks the tar, then waits for the host's empty DATA (what
// follows the end of the archive, such as padding, is read and dropped) and
// sends DONE.
func (op *tarPutOp) extract(root int) {
	defer syscall.Close(root)
	x := &extractor{root: root}
	err := x.all(tar.NewReader(op.pr))
	if err == nil {
		if _, err = io.Copy(io.Discard, op.pr); err != nil {
			return // aborted
		}
		x.setDirTimes()
		op.finish(proto.Done, doneJSON)
		return
	}
	op.in.abort()
	op.pr.CloseWithError(errQueueAborted)
	var oe *opError
	if errors.As(err, &oe) {
		op.fail(oe.kind, oe.msg)
	} else {
		op.fail(fileErrKind(err), err.Error())
	}
}

func (op *tarPutOp) handle(f Frame) {
	if f.Type == proto.Data && !op.in.push(f.Payload, op.s.hostGone) {
		op.s.end() // the host left while the queue was full
	}
}

func (op *tarPutOp) abort() {
	op.stop()
	op.in.abort()
	op.pr.CloseWithError(errQueueAborted) // the extractor stops and removes its temporary file
}
