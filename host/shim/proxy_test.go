package main

// The proxy on a Unix socket against real servers on 127.0.0.1 (allowed by
// --allow-cidr 127.0.0.1/32, as a box would need): CONNECT carries bytes
// both ways with half-close, absolute-URI requests reach the origin,
// refusals are 403 and numbered in net.log; and the -pipe mode, run as a
// child with a socket as its stdio, carries a connection and exits.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const testTimeout = 20 * time.Second

func startTestProxy(t *testing.T, f policyFile) (string, string) {
	t.Helper()
	dir := t.TempDir()
	p := testPolicy(t, f)
	log, err := openNetLog(filepath.Join(dir, "net.log"))
	if err != nil {
		t.Fatal(err)
	}
	px := newProxy(p, log)
	sock := filepath.Join(dir, "proxy.sock")
	ln, err := px.listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() { _ = px.serve(ln) }()
	return sock, filepath.Join(dir, "net.log")
}

func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

func dialProxy(t *testing.T, sock string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	return c
}

func TestConnectCarriesBothWays(t *testing.T) {
	sock, _ := startTestProxy(t, policyFile{AllowCIDRs: []string{"127.0.0.1/32"}})
	echo := echoServer(t)
	c := dialProxy(t, sock)
	defer c.Close()
	payload := strings.Repeat("0123456789", 100000) // 1 MB, sent with the request
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n%s", echo, echo, payload)
	_ = c.(*net.UnixConn).CloseWrite()
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	got, err := io.ReadAll(r)
	if err != nil || string(got) != payload {
		t.Fatalf("echoed %d bytes (err %v), want %d", len(got), err, len(payload))
	}
}

func TestAbsoluteURIRequests(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "path=%s host=%s proxy-header=%q", r.URL.Path, r.Host, r.Header.Get("Proxy-Connection"))
	}))
	defer origin.Close()
	sock, _ := startTestProxy(t, policyFile{AllowCIDRs: []string{"127.0.0.1/32"}})
	c := dialProxy(t, sock)
	defer c.Close()
	r := bufio.NewReader(c)
	for i := 0; i < 2; i++ { // two requests on one kept-alive connection
		fmt.Fprintf(c, "GET %s/x%d HTTP/1.1\r\nHost: ignored\r\nProxy-Connection: keep-alive\r\n\r\n", origin.URL, i)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("path=/x%d host=%s proxy-header=\"\"", i, strings.TrimPrefix(origin.URL, "http://"))
		if resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("got %d %q, want %q", resp.StatusCode, body, want)
		}
	}
	fmt.Fprintf(c, "GET /relative HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 400 {
		t.Fatalf("a relative URI: %v %v", resp, err)
	}
}

func TestRefusalsAre403AndLogged(t *testing.T) {
	sock, logPath := startTestProxy(t, policyFile{})
	echo := echoServer(t) // on 127.0.0.1: loopback, refused by default
	for i, req := range []string{
		fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", echo, echo),
		fmt.Sprintf("GET http://%s/ HTTP/1.1\r\nHost: x\r\n\r\n", echo),
		"CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: 169.254.169.254:80\r\n\r\n",
	} {
		c := dialProxy(t, sock)
		fmt.Fprint(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil || resp.StatusCode != 403 {
			t.Fatalf("request %d: %v %v", i, resp, err)
		}
	}
	b, _ := os.ReadFile(logPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "refused #1 "+echo+": loopback") ||
		!strings.Contains(lines[2], "refused #3 169.254.169.254:80: cloud metadata") {
		t.Fatalf("net.log:\n%s", b)
	}
	// a new shim goes on counting
	l, err := openNetLog(logPath)
	if err != nil || l.refused("x") != 4 {
		t.Fatalf("count after reopen: %v", err)
	}
}

func TestNetLogRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "net.log")
	l, err := openNetLog(path)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 250)
	for i := 0; i < 5000; i++ {
		l.refused(long + "\n\x1b[2J")
	}
	st, _ := os.Stat(path)
	old, _ := os.Stat(path + ".1")
	if st == nil || old == nil || st.Size() > netLogMax || old.Size() > netLogMax {
		t.Fatalf("sizes: %v %v", st, old)
	}
	if lastCount(path) != 5000 {
		t.Fatalf("last count %d", lastCount(path))
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), "\x1b") || strings.Count(string(b), "\n") != strings.Count(string(b), "refused #") {
		t.Fatal("a guest-chosen name broke the line format")
	}
}

// TestPipeMode runs this test binary as `-pipe` with one end of a socket
// pair as its stdin, stdout and stderr, as QEMU does.
func TestPipeMode(t *testing.T) {
	if os.Getenv("MICROBOX_SHIM_PIPE") != "" {
		return
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "proxy.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = io.Copy(c, c) // echo, then end our side when the guest ended its
		_ = c.(*net.UnixConn).CloseWrite()
		c.Close()
	}()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	child := os.NewFile(uintptr(fds[1]), "child")
	cmd := exec.Command(os.Args[0], "-test.run=TestPipeHelper")
	cmd.Env = append(os.Environ(), "MICROBOX_SHIM_PIPE="+sock)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = child, child, child
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child.Close()
	guest, err := net.FileConn(os.NewFile(uintptr(fds[0]), "guest"))
	if err != nil {
		t.Fatal(err)
	}
	_ = guest.SetDeadline(time.Now().Add(testTimeout))
	payload := strings.Repeat("abc", 300000)
	go func() {
		_, _ = io.WriteString(guest, payload)
		_ = guest.(*net.UnixConn).CloseWrite()
	}()
	got, err := io.ReadAll(guest)
	if err != nil || string(got) != payload {
		t.Fatalf("got %d bytes (%v), want %d", len(got), err, len(payload))
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("pipe exited with %v", err)
		}
	case <-time.After(testTimeout):
		_ = cmd.Process.Kill()
		t.Fatal("the pipe did not exit after both directions ended")
	}
}

func TestPipeHelper(t *testing.T) {
	if sock := os.Getenv("MICROBOX_SHIM_PIPE"); sock != "" {
		os.Exit(runPipe(sock))
	}
}

func TestPipeWithoutShimEndsTheConnection(t *testing.T) {
	if os.Getenv("MICROBOX_SHIM_PIPE") != "" {
		return
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	child := os.NewFile(uintptr(fds[1]), "child")
	cmd := exec.Command(os.Args[0], "-test.run=TestPipeHelper")
	cmd.Env = append(os.Environ(), "MICROBOX_SHIM_PIPE="+filepath.Join(t.TempDir(), "none.sock"))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = child, child, child
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child.Close()
	guest := os.NewFile(uintptr(fds[0]), "guest")
	defer guest.Close()
	got, _ := io.ReadAll(guest) // EOF once the pipe gave up, and nothing written to it
	if len(got) != 0 {
		t.Fatalf("the pipe wrote %q to the guest", got)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("the pipe exited 0 without a shim to talk to")
	}
}

// A client that half-closes right after its request still gets the answer.
func TestHalfClosedClientsGetAnswers(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond) // the client's end of input arrives first
		fmt.Fprint(w, "late")
	}))
	defer origin.Close()
	echo := echoServer(t)
	sock, _ := startTestProxy(t, policyFile{AllowCIDRs: []string{"127.0.0.1/32"}})
	for _, req := range []string{
		fmt.Sprintf("GET %s/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", origin.URL),
		fmt.Sprintf("CONNECT %s HTTP/1.1\r\n\r\nping", echo),
	} {
		c := dialProxy(t, sock)
		fmt.Fprint(c, req)
		_ = c.(*net.UnixConn).CloseWrite()
		got, _ := io.ReadAll(c)
		c.Close()
		if !strings.HasPrefix(string(got), "HTTP/1.1 200") ||
			!(strings.HasSuffix(string(got), "late") || strings.HasSuffix(string(got), "ping")) {
			t.Fatalf("%q answered %q", req, got)
		}
	}
}
