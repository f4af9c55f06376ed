package main

import (
	"bytes"
	"microbox/proto"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type execResult struct {
	pid      int
	stdout   bytes.Buffer
	stderr   bytes.Buffer
	exit     map[string]interface{}
	errKind  string
	errMsg   string
	maxChunk int
}

// collect reads the frames of stream until EXIT or ERROR.
func (h *testHost) collect(stream uint32) *execResult {
	h.t.Helper()
	return h.collectFrom(stream, 0)
}

// collectFrom is collect after STARTED {pid} was already received.
func (h *testHost) collectFrom(stream uint32, pid int) *execResult {
	h.t.Helper()
	r := &execResult{pid: pid}
	for {
		f := h.recv()
		if f.Stream != stream {
			h.t.Fatalf("unexpected %s on stream %d", typeName(f.Type), f.Stream)
		}
		switch f.Type {
		case proto.Started:
			if r.pid != 0 {
				h.t.Fatal("second STARTED")
			}
			r.pid = int(decodeMap(h.t, f.Payload)["pid"].(float64))
		case proto.Stdout, proto.Stderr:
			if r.pid == 0 {
				h.t.Fatal("output before STARTED")
			}
			if len(f.Payload) > r.maxChunk {
				r.maxChunk = len(f.Payload)
			}
			if f.Type == proto.Stdout {
				r.stdout.Write(f.Payload)
			} else {
				r.stderr.Write(f.Payload)
			}
		case proto.Exit:
			r.exit = decodeMap(h.t, f.Payload)
			return r
		case proto.Error:
			m := decodeMap(h.t, f.Payload)
			r.errKind, _ = m["kind"].(string)
			r.errMsg, _ = m["message"].(string)
			return r
		default:
			h.t.Fatalf("unexpected %s", typeName(f.Type))
		}
	}
}

func (h *testHost) started(stream uint32) int {
	h.t.Helper()
	return int(decodeMap(h.t, h.expect(proto.Started, stream).Payload)["pid"].(float64))
}

func (h *testHost) run(stream uint32, req map[string]interface{}) *execResult {
	h.t.Helper()
	h.sendJSON(proto.Exec, stream, req)
	return h.collect(stream)
}

func argv(a ...string) map[string]interface{} { return map[string]interface{}{"argv": a} }

func (r *execResult) wantExit(t *testing.T, code, sig interface{}, timedOut bool) {
	t.Helper()
	if r.exit == nil {
		t.Fatalf("no EXIT: error %s %s", r.errKind, r.errMsg)
	}
	num := func(v interface{}) interface{} {
		if i, ok := v.(int); ok {
			return float64(i)
		}
		return v
	}
	if r.exit["code"] != num(code) || r.exit["signal"] != num(sig) || r.exit["timed_out"] != timedOut {
		t.Fatalf("EXIT %v, want code %v signal %v timed_out %v (stdout %q stderr %q)",
			r.exit, code, sig, timedOut, r.stdout.String(), r.stderr.String())
	}
}

func TestExecStreamsAndCode(t *testing.T) {
	h := newHost(t)
	h.hello()
	r := h.run(1, argv("/bin/sh", "-c", "echo out; echo err >&2; exit 7"))
	r.wantExit(t, 7, nil, false)
	if r.stdout.String() != "out\n" || r.stderr.String() != "err\n" {
		t.Fatalf("stdout %q stderr %q", r.stdout.String(), r.stderr.String())
	}
	r = h.run(2, argv("true"))
	r.wantExit(t, 0, nil, false)
	// Arguments reach execve byte for byte, with no shell in between.
	args := []string{"a b", "", "$HOME", "'q'", `"d"`, "*", "tab\there", "ünï"}
	r = h.run(3, argv(append([]string{"printf", `[%s]\n`}, args...)...))
	r.wantExit(t, 0, nil, false)
	want := ""
	for _, a := range args {
		want += "[" + a + "]\n"
	}
	if r.stdout.String() != want {
		t.Fatalf("printf printed %q, want %q", r.stdout.String(), want)
	}
}

func TestExecKilledBySignal(t *testing.T) {
	h := newHost(t)
	h.hello()
	h.run(1, argv("/bin/sh", "-c", "kill -TERM $$")).wantExit(t, nil, 15, false)
}

func TestExecStartErrors(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, []byte("#!/bin/sh\necho no\n"), 0o644)
	noexec := filepath.Join(dir, "noexec")
	os.WriteFile(noexec, []byte("just text, no shebang\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "cmd"), []byte("x"), 0o644)
	h := newHost(t)
	h.hello()
	cases := []struct {
		req  map[string]interface{}
		kind string
	}{
		{argv("/nonexistent"), "not_found"},
		{argv("no-such-command-xyz"), "not_found"},
		{argv(plain), "not_executable"},
		{argv(noexec), "not_executable"},
		{argv(dir), "not_executable"},
		{map[string]interface{}{"argv": []string{"cmd"}, "env": []string{"PATH=" + dir}}, "not_executable"},
		{map[string]interface{}{"argv": []string{"sh", "-c", "true"}, "env": []string{"PATH=/nonexistent"}}, "not_found"},
		{map[string]interface{}{"argv": []string{}}, "invalid"},
		{map[string]interface{}{"argv": "sh"}, "invalid"},
		{map[string]interface{}{"argv": []string{"true"}, "env": []string{"NOEQUALS"}}, "invalid"},
		{map[string]interface{}{"argv": []string{"true"}, "user": "no-such-user-xyz"}, "bad_user"},
		{map[string]interface{}{"argv": []string{"true"}, "user": "12:ab"}, "bad_user"},
		{map[string]interface{}{"argv": []string{"true"}, "cwd": "/nonexistent"}, "bad_cwd"},
		{map[string]interface{}{"argv": []string{"true"}, "cwd": plain}, "bad_cwd"},
	}
	for i, c := range cases {
		r := h.run(uint32(10+i), c.req)
		if r.errKind != c.kind || r.pid != 0 {
			t.Errorf("%v: got kind %q (%s), pid %d, want %q", c.req, r.errKind, r.errMsg, r.pid, c.kind)
		}
	}
	r := h.run(99, argv("no-such-command-xyz"))
	if r.errMsg != "executable file not found in $PATH: no-such-command-xyz" {
		t.Errorf("message %q", r.errMsg)
	}
}

func TestExecStdin(t *testing.T) {
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"cat"}, "stdin": true})
	h.send(proto.Stdin, 1, []byte("hello\n"))
	h.send(proto.Stdin, 1, []byte("world\n"))
	h.send(proto.Stdin, 1, nil)
	r := h.collect(1)
	r.wantExit(t, 0, nil, false)
	if r.stdout.String() != "hello\nworld\n" {
		t.Fatalf("stdout %q", r.stdout.String())
	}
	// Without "stdin" the process reads /dev/null.
	r = h.run(2, argv("cat"))
	r.wantExit(t, 0, nil, false)
	if r.stdout.Len() != 0 {
		t.Fatalf("stdout %q", r.stdout.String())
	}
}

func TestExecStdinNotRead(t *testing.T) {
	// A process that never reads stdin must not block the port.
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"sleep", "100"}, "stdin": true})
	pid := h.started(1)
	chunk := make([]byte, 512*1024)
	for i := 0; i < 4; i++ {
		h.send(proto.Stdin, 1, chunk)
	}
	h.send(proto.Ping, 0, []byte("alive"))
	h.expect(proto.Pong, 0)
	h.sendJSON(proto.Signal, 1, map[string]int{"signal": 9})
	h.collectFrom(1, pid).wantExit(t, nil, 9, false)
}

func TestExecTimeout(t *testing.T) {
	h := newHost(t)
	h.hello()
	start := time.Now()
	// The background sleep holds stdout: only killing the group ends it.
	r := h.run(1, map[string]interface{}{"argv": []string{"/bin/sh", "-c", "sleep 100 & sleep 100"}, "timeout_ms": 300})
	r.wantExit(t, nil, 9, true)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timeout took %v", d)
	}
	// A process that ends in time is not timed out.
	h.run(2, map[string]interface{}{"argv": []string{"true"}, "timeout_ms": 10000}).wantExit(t, 0, nil, false)
}

func TestExecSignalFrame(t *testing.T) {
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"/bin/sh", "-c", "sleep 100; echo not reached"}})
	pid := h.started(1)
	h.sendJSON(proto.Signal, 1, map[string]int{"signal": 15})
	r := h.collectFrom(1, pid)
	r.wantExit(t, nil, 15, false)
	if r.stdout.Len() != 0 {
		t.Fatalf("stdout %q", r.stdout.String())
	}
	// Frames for finished or unknown streams are ignored.
	h.sendJSON(proto.Signal, 1, map[string]int{"signal": 9})
	h.send(proto.Stdin, 42, []byte("x"))
	h.send(proto.Ping, 0, nil)
	h.expect(proto.Pong, 0)
}

func TestExecEnvCwdUser(t *testing.T) {
	h := newHost(t)
	h.hello()
	r := h.run(1, map[string]interface{}{
		"argv": []string{"/bin/sh", "-c", `echo "$A|$PWD|$HOME|$USER|$PATH|$TERM|$B"`},
		"env":  []string{"A=b c", "B=1", "B=2"}, "cwd": "/tmp",
	})
	r.wantExit(t, 0, nil, false)
	if want := "b c|/tmp|/root|root|" + defaultPath + "||2\n"; r.stdout.String() != want {
		t.Fatalf("got %q want %q", r.stdout.String(), want)
	}
	// A numeric user missing from passwd: its ids, HOME=/ and cwd /.
	r = h.run(2, map[string]interface{}{"argv": []string{"/bin/sh", "-c", `id -u; id -g; echo "$HOME $PWD"`}, "user": "54321:54322"})
	r.wantExit(t, 0, nil, false)
	if r.stdout.String() != "54321\n54322\n/ /\n" {
		t.Fatalf("got %q", r.stdout.String())
	}
	// A named user from passwd.
	r = h.run(3, map[string]interface{}{"argv": []string{"id", "-un"}, "user": "nobody"})
	r.wantExit(t, 0, nil, false)
	if r.stdout.String() != "nobody\n" {
		t.Fatalf("got %q", r.stdout.String())
	}
}

func TestExecLargeOutput(t *testing.T) {
	h := newHost(t)
	h.hello()
	r := h.run(1, argv("head", "-c", "300000", "/dev/zero"))
	r.wantExit(t, 0, nil, false)
	if r.stdout.Len() != 300000 || r.maxChunk > outputChunk {
		t.Fatalf("got %d bytes, largest chunk %d", r.stdout.Len(), r.maxChunk)
	}
}

func TestExecTTY(t *testing.T) {
	h := newHost(t)
	h.hello()
	r := h.run(1, map[string]interface{}{"argv": []string{"/bin/sh", "-c", "stty size; tty; echo $TERM; echo err >&2"},
		"tty": true, "rows": 30, "cols": 100})
	r.wantExit(t, 0, nil, false)
	out := r.stdout.String()
	for _, want := range []string{"30 100", "/dev/pts/", "xterm", "err"} {
		if !strings.Contains(out, want) {
			t.Fatalf("tty output %q lacks %q", out, want)
		}
	}
	if r.stderr.Len() != 0 {
		t.Fatalf("stderr with tty: %q", r.stderr.String())
	}

	h.sendJSON(proto.Exec, 2, map[string]interface{}{"argv": []string{"/bin/sh", "-c", "read x; stty size; cat"}, "tty": true})
	pid := h.started(2)
	h.sendJSON(proto.Resize, 2, map[string]int{"rows": 40, "cols": 120})
	h.send(proto.Stdin, 2, []byte("go\n"))
	h.send(proto.Stdin, 2, nil) // ^D: cat sees end of input
	r = h.collectFrom(2, pid)
	r.wantExit(t, 0, nil, false)
	if !strings.Contains(r.stdout.String(), "40 120") {
		t.Fatalf("after resize: %q", r.stdout.String())
	}
}

func TestExecTTYSignalAndTimeout(t *testing.T) {
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"sleep", "100"}, "tty": true})
	pid := h.started(1)
	h.sendJSON(proto.Signal, 1, map[string]int{"signal": 2})
	h.collectFrom(1, pid).wantExit(t, nil, 2, false)
	h.run(2, map[string]interface{}{"argv": []string{"sleep", "100"}, "tty": true, "timeout_ms": 200}).wantExit(t, nil, 9, true)
}

func TestSessionEndKills(t *testing.T) {
	h := newHost(t)
	h.hello()
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"sleep", "100"}})
	pid := h.started(1)
	h.sendJSON(proto.Exec, 2, map[string]interface{}{"argv": []string{"sleep", "100"}, "tty": true, "stdin": true})
	pid2 := h.started(2)
	h.sendJSON(proto.Exec, 3, map[string]interface{}{"argv": []string{"sleep", "100"}, "detach": true, "stdin": true})
	m := decodeMap(t, h.expect(proto.Exit, 3).Payload)
	pid3 := int(m["pid"].(float64))
	if m["detached"] != true || len(m) != 2 || pid3 <= 0 {
		t.Fatalf("detached EXIT %v", m)
	}
	h.close()
	waitGone(t, pid)
	waitGone(t, pid2)
	time.Sleep(50 * time.Millisecond)
	if err := syscall.Kill(pid3, 0); err != nil {
		t.Fatalf("detached process %d was killed with the session: %v", pid3, err)
	}
	syscall.Kill(pid3, syscall.SIGKILL)
	waitGone(t, pid3) // the reaper collects it although nobody waits for it
}

func TestExecRoundTrip(t *testing.T) {
	h := newHost(t)
	h.hello()
	const n = 20
	start := time.Now()
	for i := 0; i < n; i++ {
		h.run(uint32(i+1), argv("true")).wantExit(t, 0, nil, false)
	}
	t.Logf("exec round trip of true: %v", time.Since(start)/n)
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"PATH=/bin", "HOME=/root"}, []string{"A=1", "PATH=/x", "A=2", "E="})
	want := []string{"PATH=/x", "HOME=/root", "A=2", "E="}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("got %v", got)
	}
	if envValue(got, "PATH") != "/x" || envValue(got, "PAT") != "" || envValue(got, "E") != "" {
		t.Fatal("envValue")
	}
}

func countFds(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func TestExecNoFdLeak(t *testing.T) {
	h := newHost(t)
	h.hello()
	batch := func(base uint32) {
		h.run(base, argv("true")).wantExit(t, 0, nil, false)
		h.run(base+1, map[string]interface{}{"argv": []string{"cat"}, "stdin": true, "timeout_ms": 100}).wantExit(t, nil, 9, true)
		h.run(base+2, map[string]interface{}{"argv": []string{"true"}, "tty": true}).wantExit(t, 0, nil, false)
		if r := h.run(base+3, argv("/nonexistent")); r.errKind != "not_found" {
			t.Fatal(r.errKind)
		}
		if r := h.run(base+4, argv("/etc/passwd")); r.errKind != "not_executable" {
			t.Fatal(r.errKind)
		}
	}
	batch(1) // warm up (the shared /dev/null, the poller)
	before := countFds(t)
	for i := 0; i < 5; i++ {
		batch(uint32(10 + 10*i))
	}
	deadline := time.Now().Add(testTimeout)
	for countFds(t) > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open, %d before", countFds(t), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDetachedMainExitReachesTheHook(t *testing.T) {
	h := newHost(t)
	ended := make(chan syscall.WaitStatus, 2)
	h.a.MainExited = func(ws syscall.WaitStatus) { ended <- ws }
	h.hello()
	h.sendJSON(proto.Exec, 1, map[string]interface{}{"argv": []string{"sh", "-c", "exit 3"}, "detach": true, "main": true})
	h.expect(proto.Exit, 1)
	h.sendJSON(proto.Exec, 2, map[string]interface{}{"argv": []string{"true"}, "detach": true})
	h.expect(proto.Exit, 2)
	select {
	case ws := <-ended:
		if ws.ExitStatus() != 3 {
			t.Fatalf("main exit status %d", ws.ExitStatus())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the main process's exit never reached MainExited")
	}
	select {
	case ws := <-ended: // a detached process without "main" must not end the box
		t.Fatalf("MainExited called for a non-main process: %v", ws)
	case <-time.After(200 * time.Millisecond):
	}
}
