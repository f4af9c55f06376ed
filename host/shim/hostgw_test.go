package main

// host.microbox.internal: the proxy maps the name and the gateway's address
// to the host's loopback only when the policy allows it, and refuses with
// the flag named otherwise (in the status line of a CONNECT too); a tap
// box's resolver answers the name with the gateway whatever the policy.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
)

func gatewayFile(allowed bool) *hostGatewayFile {
	return &hostGatewayFile{Names: []string{"host.microbox.internal"}, Address: "10.0.2.2",
		Target: "127.0.0.1", Allowed: allowed}
}

func TestHostGatewayDecisions(t *testing.T) {
	open := testPolicy(t, policyFile{HostGateway: gatewayFile(true), DenyAll: true})
	expectDecisions(t, open, []decision{
		{"host.microbox.internal:8443", "127.0.0.1", ""},
		{"HOST.microbox.internal.:80", "127.0.0.1", ""},
		{"10.0.2.2:22", "127.0.0.1", ""},
		{"127.0.0.1:22", "", "loopback"}, // only by its name: the blocks still stand
	})
	shut := testPolicy(t, policyFile{HostGateway: gatewayFile(false)})
	expectDecisions(t, shut, []decision{
		{"host.microbox.internal:8443", "", gatewayRefusal},
		{"10.0.2.2:8443", "", gatewayRefusal},
		{"public.test:80", "203.0.113.10", ""},
	})
	if !strings.Contains(gatewayRefusal, "--allow-private") {
		t.Fatal("the refusal must name the flag")
	}
	none := testPolicy(t, policyFile{}) // a policy file of an older host: no such name
	expectDecisions(t, none, []decision{{"10.0.2.2:80", "", "a private address (RFC 1918)"}})
}

func TestHostGatewayThroughTheProxy(t *testing.T) {
	echo := echoServer(t) // on the host's 127.0.0.1
	_, port, _ := net.SplitHostPort(echo)
	dest := "host.microbox.internal:" + port
	sock, _ := startTestProxy(t, policyFile{HostGateway: gatewayFile(true)})
	c := dialProxy(t, sock)
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\nping", dest, dest)
	_ = c.(*net.UnixConn).CloseWrite()
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	if got, _ := io.ReadAll(r); string(got) != "ping" {
		t.Fatalf("echoed %q", got)
	}
	c.Close()

	sock, logPath := startTestProxy(t, policyFile{HostGateway: gatewayFile(false)})
	c = dialProxy(t, sock)
	defer c.Close()
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", dest, dest)
	status, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 403 Forbidden (") ||
		!strings.Contains(status, "--allow-private") {
		t.Fatalf("status line %q (%v)", status, err)
	}
	b, _ := os.ReadFile(logPath)
	if !strings.Contains(string(b), "refused #1 "+dest+": "+gatewayRefusal) {
		t.Fatalf("net.log: %s", b)
	}
}

func TestResolverAnswersTheHostName(t *testing.T) {
	d := startTestDNS(t, policyFile{HostGateway: gatewayFile(false), DenyAll: true}, nil)
	r := ask(t, d, "host.microbox.internal", typeA)
	if r.rcode != rcodeOK || len(r.addrs) != 1 || r.addrs[0] != "10.0.2.2" {
		t.Fatalf("A: %+v", r)
	}
	if r := ask(t, d, "host.microbox.internal", typeAAAA); r.rcode != rcodeOK || len(r.addrs) != 0 {
		t.Fatalf("AAAA: %+v", r)
	}
}
