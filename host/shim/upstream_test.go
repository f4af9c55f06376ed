package main

// The host's own proxy: NO_PROXY matching, and the egress proxy dialing
// through a fake upstream (a CONNECT proxy on 127.0.0.1 that records what it
// was asked): the policy decides first, on the real destination, so a
// refused one never reaches the upstream; an allowed one goes as
// CONNECT host:port with the host's credentials; NO_PROXY and the host
// itself go direct; plain-HTTP requests go to the HTTP proxy as requests.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

func TestNoProxyMatching(t *testing.T) {
	u := &upstream{noProxy: parseNoProxy(" localhost, .corp.example ,*.svc.test, 10.0.0.0/8, " +
		"192.0.2.7, intra.test:8080, [2001:db8::1], ,")}
	for dest, want := range map[string]bool{
		"localhost:80":           true,
		"corp.example:443":       true, // a leading dot: the name and those below it (curl's rule)
		"a.b.corp.example:443":   true,
		"notcorp.example:443":    false,
		"x.svc.test:443":         true,
		"svc.test:443":           true,
		"10.1.2.3:22":            true,
		"11.1.2.3:22":            false,
		"192.0.2.7:443":          true,
		"intra.test:8080":        true,
		"intra.test:443":         false, // the entry names a port
		"[2001:db8::1]:443":      true,
		"public.test:443":        false,
		"LOCALHOST.:80":          true,
		"ten.example.10.0.0.0:1": false,
	} {
		if got := u.bypass(dest); got != want {
			t.Errorf("bypass(%s) = %v, want %v", dest, got, want)
		}
	}
	if !(&upstream{noProxy: parseNoProxy("*")}).bypass("anything.test:1") {
		t.Error("* matches everything")
	}
}

func TestUpstreamURLs(t *testing.T) {
	for _, bad := range []string{"https://proxy.test:3128", "socks5://p:1080", "http://"} {
		if _, err := proxyURL(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	u, err := proxyURL("proxy.test")
	if err != nil || u.Host != "proxy.test:80" {
		t.Fatalf("%v %v", u, err)
	}
}

// fakeUpstream is a CONNECT (and plain-HTTP) proxy that records each request
// line and Proxy-Authorization it gets, and tunnels to 127.0.0.1 whatever
// the destination's name.
type fakeUpstream struct {
	addr string
	mu   sync.Mutex
	seen []string
}

func (f *fakeUpstream) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

func startUpstream(t *testing.T, origin string) *fakeUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f := &fakeUpstream{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				req, err := http.ReadRequest(r)
				if err != nil {
					return
				}
				f.mu.Lock()
				f.seen = append(f.seen, req.Method+" "+req.RequestURI+" auth="+req.Header.Get("Proxy-Authorization"))
				f.mu.Unlock()
				if req.Method != http.MethodConnect {
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nupstream")
					return
				}
				up, err := net.Dial("tcp", origin)
				if err != nil {
					fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
					return
				}
				fmt.Fprintf(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				relay(c, r, up)
			}()
		}
	}()
	return f
}

func TestConnectGoesThroughTheUpstream(t *testing.T) {
	echo := echoServer(t)
	_, port, _ := net.SplitHostPort(echo)
	up := startUpstream(t, echo)
	sock, logPath := startTestProxy(t, policyFile{
		AllowHosts:  []string{"public.test", "direct.test", "unresolvable.test"},
		Hosts:       map[string][]string{"direct.test": {"127.0.0.1"}},
		AllowCIDRs:  []string{"127.0.0.1/32"},
		HostGateway: gatewayFile(true),
		Upstream:    &upstreamFile{HTTPS: "http://user:secret@" + up.addr, NoProxy: "direct.test"},
	})
	tunnel := func(dest string) (int, string) {
		c := dialProxy(t, sock)
		defer c.Close()
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\nhello", dest, dest)
		_ = c.(*net.UnixConn).CloseWrite()
		r := bufio.NewReader(c)
		resp, err := http.ReadResponse(r, &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatalf("%s: %v", dest, err)
		}
		if resp.StatusCode != 200 {
			return resp.StatusCode, ""
		}
		got, _ := io.ReadAll(r)
		return 200, string(got)
	}
	// allowed: through the upstream, by name, with the host's credentials;
	// a name the host cannot resolve is left to the upstream
	for _, dest := range []string{"public.test:" + port, "unresolvable.test:" + port} {
		if code, got := tunnel(dest); code != 200 || got != "hello" {
			t.Fatalf("%s: %d %q", dest, code, got)
		}
	}
	// refused by the policy: the upstream never hears of it
	if code, _ := tunnel("other.test:443"); code != 403 {
		t.Fatalf("other.test: %d", code)
	}
	// NO_PROXY and the host itself: dialed directly
	for _, dest := range []string{"direct.test:" + port, "host.microbox.internal:" + port} {
		if code, got := tunnel(dest); code != 200 || got != "hello" {
			t.Fatalf("%s: %d %q", dest, code, got)
		}
	}
	auth := "auth=Basic dXNlcjpzZWNyZXQ=" // user:secret
	want := []string{"CONNECT public.test:" + port + " " + auth, "CONNECT unresolvable.test:" + port + " " + auth}
	if got := up.requests(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("the upstream saw %q, want %q", got, want)
	}
	if lines := netLogLines(t, logPath); len(lines) != 1 || !strings.Contains(lines[0], "other.test:443: a name not in --allow-host") {
		t.Fatalf("net.log: %q", lines)
	}
}

func TestPlainHTTPGoesToTheUpstream(t *testing.T) {
	up := startUpstream(t, "127.0.0.1:1")
	sock, _ := startTestProxy(t, policyFile{
		Upstream: &upstreamFile{HTTP: up.addr},
	})
	get := func(url string) (int, string) {
		c := dialProxy(t, sock)
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", url)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("http://public.test/a"); code != 200 || body != "upstream" {
		t.Fatalf("%d %q", code, body)
	}
	if code, _ := get("http://rebind.test/"); code != 403 { // resolves to 127.0.0.1: refused first
		t.Fatalf("rebind: %d", code)
	}
	if got := up.requests(); len(got) != 1 || got[0] != "GET http://public.test/a auth=" {
		t.Fatalf("the upstream saw %q", got)
	}
}

func TestUpstreamRefusalIsBadGateway(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = http.ReadRequest(bufio.NewReader(c))
			fmt.Fprintf(c, "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
			c.Close()
		}
	}()
	defer ln.Close()
	sock, _ := startTestProxy(t, policyFile{Upstream: &upstreamFile{HTTPS: addr}})
	c := dialProxy(t, sock)
	defer c.Close()
	fmt.Fprintf(c, "CONNECT public.test:443 HTTP/1.1\r\nHost: public.test:443\r\n\r\n")
	status, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(status, "HTTP/1.1 502") || !strings.Contains(status, "407") {
		t.Fatalf("status %q", status)
	}
}
