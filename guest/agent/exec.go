package main

// EXEC: start a process, stream its output, report its exit.

import (
	"encoding/json"
	"errors"
	"io"
	"microbox/proto"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

type execRequest struct {
	Argv      wireStrings `json:"argv"`
	Env       wireStrings `json:"env"`
	Cwd       wireString  `json:"cwd"`
	User      string      `json:"user"`
	TTY       bool        `json:"tty"`
	Rows      int         `json:"rows"`
	Cols      int         `json:"cols"`
	Stdin     bool        `json:"stdin"`
	TimeoutMs int64       `json:"timeout_ms"`
	Detach    bool        `json:"detach"`
	Main      bool        `json:"main"` // with detach: the box ends when this process does
}

// opError is an operation failure reported as ERROR on its stream.
type opError struct{ kind, msg string }

func opErr(kind, msg string) *opError { return &opError{kind, msg} }

func (e *opError) Error() string { return e.msg }

// execSpec is a validated request, ready to fork.
type execSpec struct {
	req  execRequest
	path string
	env  []string
	cwd  string
	user userInfo
}

func (a *Agent) prepareExec(payload []byte) (*execSpec, *opError) {
	var sp execSpec
	r := &sp.req
	if err := json.Unmarshal(payload, r); err != nil {
		return nil, opErr("invalid", "bad EXEC request: "+err.Error())
	}
	if len(r.Argv) == 0 {
		return nil, opErr("invalid", "argv must be a non-empty list")
	}
	if r.Argv[0] == "" {
		return nil, opErr("not_found", "empty program name")
	}
	if r.Rows < 0 || r.Rows > 0xffff || r.Cols < 0 || r.Cols > 0xffff {
		return nil, opErr("invalid", "rows and cols must be in 0..65535")
	}
	for _, kv := range r.Env {
		if strings.IndexByte(kv, '=') <= 0 {
			return nil, opErr("invalid", "env entry is not KEY=VALUE: "+kv)
		}
	}
	if r.Detach {
		r.TTY = false // a detached process writes to the console
	}
	u, err := resolveUser(r.User, a.PasswdPath, a.GroupPath)
	if err != nil {
		return nil, opErr("bad_user", err.Error())
	}
	sp.user = u
	if cwd := string(r.Cwd); cwd == "" {
		sp.cwd = "/"
		if isDir(u.home) {
			sp.cwd = u.home
		}
	} else {
		if !isDir(cwd) {
			return nil, opErr("bad_cwd", "working directory is not a directory: "+cwd)
		}
		sp.cwd = cwd
	}
	sp.env = execEnv(u, r.TTY, r.Env)
	path, oe := lookPath(r.Argv[0], envValue(sp.env, "PATH"), sp.cwd)
	if oe != nil {
		return nil, oe
	}
	sp.path = path
	return &sp, nil
}

func isDir(path string) bool {
	var st syscall.Stat_t
	return syscall.Stat(path, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFDIR
}

func hostname() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return ""
	}
	b := make([]byte, 0, len(u.Nodename))
	for _, c := range u.Nodename {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// execEnv builds the environment: defaults, then the request's entries; a
// later entry for the same key replaces the earlier one in place.
func execEnv(u userInfo, tty bool, extra []string) []string {
	base := []string{"PATH=" + defaultPath, "HOME=" + u.home, "USER=" + u.name, "HOSTNAME=" + hostname()}
	if tty {
		base = append(base, "TERM=xterm")
	}
	return mergeEnv(base, extra)
}

func mergeEnv(base, extra []string) []string {
	out := make([]string, 0, len(base)+len(extra))
	idx := make(map[string]int, len(base)+len(extra))
	add := func(kv string) {
		k := kv
		if i := strings.IndexByte(kv, '='); i >= 0 {
			k = kv[:i]
		}
		if i, ok := idx[k]; ok {
			out[i] = kv
			return
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	for _, kv := range base {
		add(kv)
	}
	for _, kv := range extra {
		add(kv)
	}
	return out
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if strings.HasPrefix(kv, key) && len(kv) > len(key) && kv[len(key)] == '=' {
			return kv[len(key)+1:]
		}
	}
	return ""
}

// lookPath finds file like execvp: a name with a slash is used as is
// (relative to cwd), otherwise the first executable regular file in pathEnv
// wins. A match that is not executable gives not_executable.
func lookPath(file, pathEnv, cwd string) (string, *opError) {
	abs := func(p string) string {
		if strings.HasPrefix(p, "/") {
			return p
		}
		return strings.TrimSuffix(cwd, "/") + "/" + p
	}
	if strings.IndexByte(file, '/') >= 0 {
		var st syscall.Stat_t
		if err := syscall.Stat(abs(file), &st); err != nil {
			if err == syscall.ENOENT || err == syscall.ENOTDIR {
				return "", opErr("not_found", "no such file or directory: "+file)
			}
			return "", opErr("not_executable", file+": "+err.Error())
		}
		if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			return "", opErr("not_executable", "is a directory: "+file)
		}
		if st.Mode&0o111 == 0 {
			return "", opErr("not_executable", "permission denied: "+file)
		}
		return file, nil
	}
	sawFile := false
	for _, dir := range strings.Split(pathEnv, ":") {
		if dir == "" {
			dir = "."
		}
		p := strings.TrimSuffix(dir, "/") + "/" + file
		var st syscall.Stat_t
		if syscall.Stat(abs(p), &st) != nil || st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			continue
		}
		if st.Mode&0o111 != 0 {
			return p, nil
		}
		sawFile = true
	}
	if sawFile {
		return "", opErr("not_executable", "permission denied: "+file)
	}
	return "", opErr("not_found", "executable file not found in $PATH: "+file)
}

// execErrKind maps an error of fork/chdir/execve in the child to a kind.
func execErrKind(err error) string {
	switch err {
	case syscall.ENOENT:
		return "not_found"
	case syscall.EACCES, syscall.ENOEXEC, syscall.EISDIR, syscall.ENOTDIR, syscall.EPERM,
		syscall.ETXTBSY, syscall.ELIBBAD, syscall.ELOOP, syscall.ENAMETOOLONG:
		return "not_executable"
	case syscall.EINVAL, syscall.E2BIG:
		return "invalid"
	}
	return "io"
}

// handleExec starts the process of an EXEC frame and the goroutines that
// serve it. It runs on the session's reading goroutine.
func (s *Session) handleExec(stream uint32, payload []byte) {
	sp, oe := s.a.prepareExec(payload)
	if oe != nil {
		s.sendJSON(proto.Error, stream, errorMsg{Kind: oe.kind, Message: oe.msg})
		return
	}
	p, oe := s.a.spawn(s, stream, sp)
	if oe != nil {
		s.sendJSON(proto.Error, stream, errorMsg{Kind: oe.kind, Message: oe.msg})
		return
	}
	if sp.req.Detach {
		// The answer to a detached EXEC is this EXIT alone (no STARTED):
		// the stream ends while the process lives on.
		s.sendJSON(proto.Exit, stream, detachedExitMsg{Detached: true, Pid: p.pid})
		return
	}
	p.fl = s.register(stream, p)
	s.sendJSON(proto.Started, stream, startedMsg{Pid: p.pid})
	p.serve(sp.req.TimeoutMs)
}

// proc is one running, attached process.
type proc struct {
	s      *Session
	stream uint32
	pid    int
	fl     *flow      // flow control, nil without
	tty    *os.File   // PTY master, nil without tty
	stdin  *byteQueue // nil when stdin is /dev/null
	stdinW *os.File   // pipe to stdin (non-tty)
	outs   []*os.File // stdout, stderr pipes (non-tty)
	exitCh chan syscall.WaitStatus
	wg     sync.WaitGroup

	mu       sync.Mutex
	exited   bool
	done     bool
	timedOut bool
	timer    *time.Timer
}

// spawn forks the process with its stdio. Only the descriptors the agent
// keeps are left open in the agent when it returns.
func (a *Agent) spawn(s *Session, stream uint32, sp *execSpec) (*proc, *opError) {
	r := &sp.req
	p := &proc{s: s, stream: stream, exitCh: make(chan syscall.WaitStatus, 1)}
	var files [3]uintptr
	var childEnds []int
	var parents []*os.File
	fail := func(kind, msg string) (*proc, *opError) {
		for _, fd := range childEnds {
			syscall.Close(fd)
		}
		for _, f := range parents {
			f.Close()
		}
		return nil, opErr(kind, msg)
	}
	null, err := a.nullFd()
	if err != nil {
		return fail("io", "open /dev/null: "+err.Error())
	}
	switch {
	case r.Detach:
		files = [3]uintptr{uintptr(null), uintptr(a.ConsoleFd), uintptr(a.ConsoleFd)}
	case r.TTY:
		rows, cols := r.Rows, r.Cols
		if rows == 0 {
			rows = 24
		}
		if cols == 0 {
			cols = 80
		}
		master, slave, err := openPTY(rows, cols)
		if err != nil {
			return fail("io", "open pty: "+err.Error())
		}
		p.tty = master
		parents = append(parents, master)
		childEnds = append(childEnds, slave)
		files = [3]uintptr{uintptr(slave), uintptr(slave), uintptr(slave)}
	default:
		files[0] = uintptr(null)
		if r.Stdin {
			child, mine, err := pipePair(false)
			if err != nil {
				return fail("io", "pipe: "+err.Error())
			}
			childEnds = append(childEnds, child)
			p.stdinW = mine
			parents = append(parents, mine)
			files[0] = uintptr(child)
		}
		for i := 1; i <= 2; i++ {
			child, mine, err := pipePair(true)
			if err != nil {
				return fail("io", "pipe: "+err.Error())
			}
			childEnds = append(childEnds, child)
			p.outs = append(p.outs, mine)
			parents = append(parents, mine)
			files[i] = uintptr(child)
		}
	}
	sys := &syscall.SysProcAttr{}
	if r.TTY {
		sys.Setsid, sys.Setctty, sys.Ctty = true, true, 0
	} else {
		sys.Setpgid = true
	}
	if !sp.user.isRoot {
		sys.Credential = &syscall.Credential{Uid: sp.user.uid, Gid: sp.user.gid, Groups: sp.user.groups}
	}
	attr := &syscall.ProcAttr{Dir: sp.cwd, Env: sp.env, Files: files[:], Sys: sys}
	var onExit func(syscall.WaitStatus)
	switch {
	case !r.Detach:
		onExit = func(ws syscall.WaitStatus) { p.exitCh <- ws }
	case r.Main && a.MainExited != nil:
		onExit = func(ws syscall.WaitStatus) { go a.MainExited(ws) }
	}
	pid, err := a.Reaper.Start(func() (int, error) {
		return syscall.ForkExec(sp.path, r.Argv, attr)
	}, onExit)
	if err != nil {
		return fail(execErrKind(err), r.Argv[0]+": "+err.Error())
	}
	for _, fd := range childEnds {
		syscall.Close(fd)
	}
	p.pid = pid
	return p, nil
}

// pipePair returns a close-on-exec pipe; the agent's end (the read end when
// agentReads, else the write end) is non-blocking and served by the Go
// poller, the other end is the raw descriptor for the child.
func pipePair(agentReads bool) (int, *os.File, error) {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		return 0, nil, err
	}
	mine, child := fds[1], fds[0]
	if agentReads {
		mine, child = fds[0], fds[1]
	}
	syscall.SetNonblock(mine, true)
	if agentReads {
		// Room for a whole output frame: fewer, larger frames cost every
		// hop (agent, QEMU, shim, client) less per byte. The pipe keeps its
		// 64 KiB if the kernel refuses (pipe-max-size, user quota).
		syscall.Syscall(syscall.SYS_FCNTL, uintptr(mine), fSetPipeSz, outputChunk)
	}
	return child, os.NewFile(uintptr(mine), "pipe"), nil
}

const fSetPipeSz = 1031 // F_SETPIPE_SZ

// outputChunk is the largest payload of an exec's STDOUT or STDERR frame.
// Measured under TCG, old and new agents alternated: exec stdout 102 -> 138
// MB/s against 64 KiB frames. Each pump holds one buffer of it while it runs.
const outputChunk = 128 * 1024

var bufPool = newBufPool(chunkSize)
var outputPool = newBufPool(outputChunk)

func newBufPool(size int) *sync.Pool {
	return &sync.Pool{New: func() interface{} { b := make([]byte, headerSize+size); return &b }}
}

// serve starts the goroutines of an attached process.
func (p *proc) serve(timeoutMs int64) {
	if p.tty != nil {
		p.wg.Add(1)
		go p.pump(p.tty, proto.Stdout)
		p.stdin = p.s.newByteQueue(p.fl)
		go p.stdin.run(p.tty, nil)
	} else {
		p.wg.Add(2)
		go p.pump(p.outs[0], proto.Stdout)
		go p.pump(p.outs[1], proto.Stderr)
		if p.stdinW != nil {
			p.stdin = p.s.newByteQueue(p.fl)
			go func() {
				defer p.stdinW.Close() // the end of input, or the writer died
				p.stdin.run(p.stdinW, func() error { return nil })
			}()
		}
	}
	if timeoutMs > 0 {
		p.timer = time.AfterFunc(time.Duration(timeoutMs)*time.Millisecond, p.timeout)
	}
	go p.wait()
}

// pump forwards one output descriptor until EOF (EIO for a PTY master). It
// keeps reading after the session died, or the stream was cancelled, so the
// process never blocks on output.
func (p *proc) pump(f *os.File, t byte) {
	defer p.wg.Done()
	defer f.Close()
	err := forwardChunks(f, t, p.stream, p.fl, outputPool, func(frame []byte) bool {
		p.s.sendFrame(frame) // a dead session drops it; keep draining
		return true
	})
	if err == errSendRefused {
		io.Copy(io.Discard, f) // the stream ended: drop the rest
	}
}

// errSendRefused: forwardChunks stopped because send refused a frame.
var errSendRefused = errors.New("frame not sent")

// forwardChunks reads f into frames of type t on stream, each built in a
// pooled buffer, until a read fails (io.EOF at the end of a file) or send
// refuses a frame (errSendRefused). With flow control each read is sized
// by the credit there is (one byte without any, so that the end of the
// input, such as a process exiting, is seen without credit) and what it
// read is sent as credit allows, waiting for it; no credit is held while a
// read waits, since a stream's stdout and stderr share theirs. Once the
// stream ended (fl closed) it stops with errSendRefused.
func forwardChunks(f io.Reader, t byte, stream uint32, fl *flow, pool *sync.Pool,
	send func([]byte) bool) error {
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	buf := *bp
	size := len(buf) - headerSize // the pool's chunk: chunkSize or outputChunk
	for {
		room, ok := fl.peek(size)
		if !ok {
			return errSendRefused
		}
		n, err := f.Read(buf[headerSize : headerSize+room])
		for off := 0; off < n; {
			k, ok := fl.take(n - off)
			if !ok {
				return errSendRefused
			}
			frame := buf[:headerSize+n]
			if off > 0 || k < n {
				frame = encodeFrame(t, stream, buf[headerSize+off:headerSize+off+k])
			} else {
				putHeader(buf, t, stream, n)
			}
			if !send(frame) {
				return errSendRefused
			}
			off += k
		}
		if err != nil {
			return err
		}
	}
}

// wait sends EXIT once the process was reaped and its output fully read.
func (p *proc) wait() {
	ws := <-p.exitCh
	p.mu.Lock()
	p.exited = true
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	p.done = true
	if p.timer != nil {
		p.timer.Stop()
	}
	msg := exitMsg{TimedOut: p.timedOut}
	p.mu.Unlock()
	if p.stdin != nil {
		p.stdin.abort()
	}
	if ws.Signaled() {
		sig := int(ws.Signal())
		msg.Signal = &sig
	} else {
		code := ws.ExitStatus()
		msg.Code = &code
	}
	p.s.finish(p.stream, proto.Exit, marshalJSON(msg))
}

func (p *proc) timeout() {
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		return
	}
	if !p.exited {
		p.timedOut = true
	}
	p.mu.Unlock()
	p.killGroup(syscall.SIGKILL)
}

// killGroup signals the process group (and, with a PTY, its foreground
// process group too).
func (p *proc) killGroup(sig syscall.Signal) {
	syscall.Kill(-p.pid, sig)
	if p.tty != nil {
		if pg := ptyForeground(p.tty); pg > 0 && pg != p.pid {
			syscall.Kill(-pg, sig)
		}
	}
}

// abort runs when the session ends, or on CANCEL: kill the process group.
// Its output is drained and dropped; EXIT still ends the stream.
func (p *proc) abort() {
	p.fl.close()
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if !done {
		p.killGroup(syscall.SIGKILL)
	}
	if p.stdin != nil {
		p.stdin.abort()
	}
}

func (p *proc) handle(f Frame) {
	switch f.Type {
	case proto.Stdin:
		if p.stdin != nil && !p.stdin.push(f.Payload, p.s.hostGone) {
			p.s.end() // the host left while the queue was full
		}
	case proto.Signal:
		var m struct {
			Signal int `json:"signal"`
		}
		if json.Unmarshal(f.Payload, &m) != nil || m.Signal < 1 || m.Signal > 64 {
			return
		}
		p.mu.Lock()
		done := p.done
		p.mu.Unlock()
		if done {
			return
		}
		target := p.pid
		if p.tty != nil {
			if pg := ptyForeground(p.tty); pg > 0 {
				target = pg
			}
		}
		syscall.Kill(-target, syscall.Signal(m.Signal))
	case proto.Resize:
		var m struct {
			Rows int `json:"rows"`
			Cols int `json:"cols"`
		}
		if p.tty == nil || json.Unmarshal(f.Payload, &m) != nil ||
			m.Rows <= 0 || m.Cols <= 0 || m.Rows > 0xffff || m.Cols > 0xffff {
			return
		}
		ptyResize(p.tty, m.Rows, m.Cols)
	}
}
