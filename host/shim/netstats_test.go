package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The proxy counts the bytes of a tunnel both ways and its connections, and a
// refused one; the file carries them, and a new shim goes on from the file.
func TestNetStatsCountTraffic(t *testing.T) {
	dir := t.TempDir()
	log, err := openNetLog(filepath.Join(dir, "net.log"))
	if err != nil {
		t.Fatal(err)
	}
	px := newProxy(testPolicy(t, policyFile{AllowCIDRs: []string{"127.0.0.1/32"}}), log)
	path := filepath.Join(dir, "net-stats.json")
	px.stats = openNetStats(path, log)
	ln, err := px.listen(filepath.Join(dir, "proxy.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { _ = px.serve(ln) }()
	echo := echoServer(t)
	c := dialProxy(t, filepath.Join(dir, "proxy.sock"))
	payload := strings.Repeat("x", 100000)
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n%s", echo, echo, payload)
	_ = c.(*net.UnixConn).CloseWrite()
	r := bufio.NewReader(c)
	if resp, err := http.ReadResponse(r, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	if got, _ := io.ReadAll(r); len(got) != len(payload) {
		t.Fatalf("echoed %d bytes", len(got))
	}
	c.Close()
	log.refused("test")
	f := px.stats.snapshot()
	if f.TxBytes < uint64(len(payload)) || f.RxBytes < uint64(len(payload)) || f.Connections != 1 ||
		f.Refused != 1 {
		t.Fatalf("counters %+v", f)
	}
	if !px.stats.write(f) {
		t.Fatal("not written")
	}
	var back netStatsFile
	b, _ := os.ReadFile(path)
	if json.Unmarshal(b, &back) != nil || back != f {
		t.Fatalf("file %s, want %+v", b, f)
	}
	if again := openNetStats(path, log).snapshot(); again != f {
		t.Fatalf("resumed %+v, want %+v", again, f)
	}
}
