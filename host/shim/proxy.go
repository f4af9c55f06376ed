package main

// The egress proxy of a --net user box (docs/net.md). The guest reaches it at
// 10.0.2.100:3128: QEMU's user-mode stack, restricted to that one forward,
// starts `microbox-shim -pipe <box dir>/proxy.sock` per guest connection,
// and the pipe carries the connection to the listener here. It speaks HTTP
// proxy: CONNECT host:port (https and anything else over TCP) and requests
// with an absolute http:// URI. Every destination is decided by the box's
// policy, on the host, before anything is dialed; refusals are answered 403
// and written to net.log.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	proxyMaxConns = 512 // guest connections at once; each is a pipe process on the host
	dialTimeout   = 10 * time.Second
)

type proxy struct {
	pol   *policy
	log   *netLog
	slots chan struct{}
	rp    *httputil.ReverseProxy
	stats *netStats // nil: not counted
}

func newProxy(pol *policy, log *netLog) *proxy {
	px := &proxy{pol: pol, log: log, slots: make(chan struct{}, proxyMaxConns)}
	direct := &http.Transport{
		Proxy:               nil,
		DialContext:         px.dialContext,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}
	rt := &router{px: px, direct: direct}
	if up := pol.upstream; up != nil && up.http != nil {
		rt.via = &http.Transport{
			Proxy:               http.ProxyURL(up.http),
			DialContext:         up.dial, // the host's own proxy: its address is not the guest's choice
			DisableCompression:  true,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     30 * time.Second,
		}
	}
	px.rp = &httputil.ReverseProxy{
		Director:      func(*http.Request) {}, // the absolute URI names the origin already
		Transport:     rt,
		FlushInterval: -1,
		ErrorHandler:  px.failed,
		ErrorLog:      nil,
	}
	return px
}

// router sends a plain-HTTP request directly (decided as it is dialed), or,
// when the host has an HTTP proxy for its destination, decides it first and
// hands it to that proxy.
type router struct {
	px          *proxy
	direct, via *http.Transport
}

func (rt *router) RoundTrip(req *http.Request) (*http.Response, error) {
	dest := req.URL.Host
	if req.URL.Port() == "" {
		dest = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	if rt.via == nil || rt.px.pol.toHost(dest) || rt.px.pol.upstream.forHTTP(dest) == nil {
		return rt.direct.RoundTrip(req)
	}
	if _, err := rt.px.decide(req.Context(), dest, true); err != nil {
		return nil, err
	}
	return rt.via.RoundTrip(req)
}

// listen binds the proxy's socket (mode 0600).
func (px *proxy) listen(path string) (net.Listener, error) {
	_ = os.Remove(path)
	old := syscall.Umask(0o077)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	return ln, err
}

// serve answers guest connections until the listener is closed.
func (px *proxy) serve(ln net.Listener) error {
	srv := &http.Server{
		Handler:           px,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          nil,
	}
	return srv.Serve(&limited{Listener: ln, slots: px.slots, stats: px.stats})
}

func (px *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		px.connect(w, r)
		return
	}
	if !r.URL.IsAbs() || r.URL.Scheme != "http" || r.URL.Host == "" {
		http.Error(w, "microbox: this is the box's HTTP proxy: send CONNECT, or a request with "+
			"an absolute http:// URI (https goes through CONNECT)", http.StatusBadRequest)
		return
	}
	r.Header.Del("Proxy-Authorization")
	// A client that half-closes after its request (printf ... | nc) still
	// wants the answer; net/http would cancel the request's context on that
	// end of input, so the request to the origin gets one of its own.
	px.rp.ServeHTTP(w, r.WithContext(detached{r.Context()}))
}

// detached keeps a context's values but not its cancellation. Its Done is
// a channel that never closes, not nil: on a nil one, ReverseProxy would
// watch the connection's CloseNotify instead, which fires at the same end
// of input.
type detached struct{ parent context.Context }

var never = make(chan struct{})

func (d detached) Deadline() (time.Time, bool)       { return time.Time{}, false }
func (d detached) Done() <-chan struct{}             { return never }
func (d detached) Err() error                        { return nil }
func (d detached) Value(key interface{}) interface{} { return d.parent.Value(key) }

// decide applies the policy to dest, logging a refusal. viaUpstream: the
// host's proxy will dial it, so a name the host cannot resolve goes on
// (that proxy resolves it; behind one, often only it can).
func (px *proxy) decide(ctx context.Context, dest string, viaUpstream bool) ([]net.IP, error) {
	ips, err := px.pol.resolve(ctx, dest)
	var ref *refusal
	var lk *lookupError
	switch {
	case errors.As(err, &ref):
		px.log.refused(ref.Error())
	case viaUpstream && errors.As(err, &lk):
		return nil, nil
	}
	return ips, err
}

// dialContext is the only way out: decide, then dial an allowed address, or
// the destination through the host's own proxy (upstream.go).
func (px *proxy) dialContext(ctx context.Context, _ string, dest string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var via *url.URL
	if !px.pol.toHost(dest) {
		via = px.pol.upstream.forConnect(dest)
	}
	ips, err := px.decide(ctx, dest, via != nil)
	if err != nil {
		return nil, err
	}
	if via != nil {
		return px.pol.upstream.connect(ctx, via, dest)
	}
	_, port, _ := net.SplitHostPort(dest)
	var d net.Dialer
	var last error
	for _, ip := range ips {
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, last
}

// failed answers a request that could not be carried out.
func (px *proxy) failed(w http.ResponseWriter, _ *http.Request, err error) {
	code, text := verdict(err)
	http.Error(w, text, code)
}

func verdict(err error) (int, string) {
	var ref *refusal
	if errors.As(err, &ref) {
		return http.StatusForbidden, "microbox: refused by the box's network policy: " + ref.Error()
	}
	var lk *lookupError
	if errors.As(err, &lk) {
		return http.StatusBadGateway, "microbox: cannot resolve " + lk.Error()
	}
	return http.StatusBadGateway, "microbox: " + err.Error()
}

func (px *proxy) connect(w http.ResponseWriter, r *http.Request) {
	dest := r.Host
	if _, _, err := net.SplitHostPort(dest); err != nil {
		http.Error(w, "microbox: CONNECT needs host:port", http.StatusBadRequest)
		return
	}
	up, err := px.dialContext(detached{r.Context()}, "tcp", dest) // as in ServeHTTP
	if err != nil {
		px.refuseConnect(w, err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "microbox: cannot take over the connection", http.StatusInternalServerError)
		return
	}
	guest, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	_ = guest.SetDeadline(time.Time{})
	if _, err := io.WriteString(guest, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		up.Close()
		guest.Close()
		return
	}
	var from io.Reader = guest
	if n := buf.Reader.Buffered(); n > 0 { // bytes the guest sent right after the request
		head, _ := buf.Reader.Peek(n)
		from = io.MultiReader(bytes.NewReader(append([]byte(nil), head...)), guest)
	}
	relay(guest, from, up)
}

// refuseConnect answers a CONNECT that failed with the reason in the status
// line too: a client of a tunnel shows that line, not the body (Python's
// "Tunnel connection failed: 403 ...", curl -v).
func (px *proxy) refuseConnect(w http.ResponseWriter, err error) {
	code, text := verdict(err)
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, text, code)
		return
	}
	c, buf, herr := hj.Hijack()
	if herr != nil {
		return
	}
	defer c.Close()
	line := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, text)
	_, _ = fmt.Fprintf(buf, "HTTP/1.1 %d %s (%s)\r\nContent-Type: text/plain; charset=utf-8\r\n"+
		"Content-Length: %d\r\nConnection: close\r\n\r\n%s\n", code, http.StatusText(code), line,
		len(text)+1, text)
	_ = buf.Flush()
}

// limited caps the guest connections served at once: past the cap a new
// one is closed at once (its pipe process then exits).
type limited struct {
	net.Listener
	slots chan struct{}
	stats *netStats
}

func (l *limited) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			if l.stats != nil {
				l.stats.conns.Add(1)
			}
			return &slotConn{Conn: c, slots: l.slots, stats: l.stats}, nil
		default:
			c.Close()
		}
	}
}

type slotConn struct {
	net.Conn
	slots chan struct{}
	once  sync.Once
	stats *netStats
}

// Read counts what the box sent, Write what it received.
func (c *slotConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.stats != nil && n > 0 {
		c.stats.tx.Add(uint64(n))
	}
	return n, err
}

func (c *slotConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.stats != nil && n > 0 {
		c.stats.rx.Add(uint64(n))
	}
	return n, err
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.slots })
	return err
}

func (c *slotConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
