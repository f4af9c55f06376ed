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
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
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
}

func newProxy(pol *policy, log *netLog) *proxy {
	px := &proxy{pol: pol, log: log, slots: make(chan struct{}, proxyMaxConns)}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         px.dialContext,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}
	px.rp = &httputil.ReverseProxy{
		Director:      func(*http.Request) {}, // the absolute URI names the origin already
		Transport:     tr,
		FlushInterval: -1,
		ErrorHandler:  px.failed,
		ErrorLog:      nil,
	}
	return px
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
	return srv.Serve(&limited{Listener: ln, slots: px.slots})
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

// dialContext is the only way out: decide, then dial an allowed address.
func (px *proxy) dialContext(ctx context.Context, _ string, dest string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	ips, err := px.pol.resolve(ctx, dest)
	if err != nil {
		var ref *refusal
		if errors.As(err, &ref) {
			px.log.refused(ref.Error())
		}
		return nil, err
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
		code, text := verdict(err)
		http.Error(w, text, code)
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

// limited caps the guest connections served at once: past the cap a new
// one is closed at once (its pipe process then exits).
type limited struct {
	net.Listener
	slots chan struct{}
}

func (l *limited) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &slotConn{Conn: c, slots: l.slots}, nil
		default:
			c.Close()
		}
	}
}

type slotConn struct {
	net.Conn
	slots chan struct{}
	once  sync.Once
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
