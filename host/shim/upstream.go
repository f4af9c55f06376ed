package main

// The host's own HTTP proxies (docs/net.md, "Behind a proxy"): where the
// environment of the command that started the box had HTTPS_PROXY,
// HTTP_PROXY or NO_PROXY (the host writes what it found into the policy
// file), the egress proxy dials through them. The box's policy is decided
// first, on the real destination; only an allowed one goes on, as
// `CONNECT host:port` to the host's HTTPS proxy (a guest's CONNECT) or as the
// request itself to its HTTP proxy (a guest's plain http:// request). A
// destination NO_PROXY matches, and the host itself (host.microbox.internal),
// is dialed directly.

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

type upstreamFile struct {
	HTTPS   string `json:"https"`    // a URL, http://[user:pass@]host:port; "": none
	HTTP    string `json:"http"`     // the same, for plain-HTTP requests
	NoProxy string `json:"no_proxy"` // NO_PROXY as the host had it
}

type upstream struct {
	https, http *url.URL
	noProxy     []noProxyEntry
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
}

// noProxyEntry is one NO_PROXY entry: "*", an address or range, or a name
// (with or without a leading "." or "*.": it matches the name and every
// name below it), each optionally with ":port".
type noProxyEntry struct {
	all  bool
	cidr *net.IPNet
	name string
	port string
}

func compileUpstream(f *upstreamFile) (*upstream, error) {
	if f == nil || f.HTTPS == "" && f.HTTP == "" {
		return nil, nil
	}
	u := &upstream{noProxy: parseNoProxy(f.NoProxy), dial: (&net.Dialer{}).DialContext}
	var err error
	if u.https, err = proxyURL(f.HTTPS); err != nil {
		return nil, err
	}
	if u.http, err = proxyURL(f.HTTP); err != nil {
		return nil, err
	}
	return u, nil
}

func proxyURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, nil
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.Hostname() == "" {
		return nil, fmt.Errorf("bad upstream proxy %q: want http://HOST:PORT", s)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "80")
	}
	return u, nil
}

func parseNoProxy(s string) []noProxyEntry {
	var out []noProxyEntry
	for _, raw := range strings.Split(s, ",") {
		e := strings.ToLower(strings.TrimSpace(raw))
		if e == "" {
			continue
		}
		if e == "*" {
			out = append(out, noProxyEntry{all: true})
			continue
		}
		if _, n, err := net.ParseCIDR(e); err == nil {
			out = append(out, noProxyEntry{cidr: n})
			continue
		}
		host, port := e, ""
		if h, p, err := net.SplitHostPort(e); err == nil {
			host, port = h, p
		}
		host = strings.Trim(host, "[]")
		if ip := net.ParseIP(host); ip != nil {
			bits := 8 * len(ip.To16())
			if ip.To4() != nil {
				ip, bits = ip.To4(), 32
			}
			out = append(out, noProxyEntry{cidr: &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, port: port})
			continue
		}
		host = strings.TrimPrefix(strings.TrimPrefix(host, "*"), ".")
		if host != "" {
			out = append(out, noProxyEntry{name: normName(host), port: port})
		}
	}
	return out
}

// bypass: NO_PROXY names dest ("host:port"), which is then dialed directly.
func (u *upstream) bypass(dest string) bool {
	host, port, err := net.SplitHostPort(dest)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	name := normName(host)
	for _, e := range u.noProxy {
		switch {
		case e.all:
			return true
		case e.port != "" && e.port != port:
		case e.cidr != nil:
			if ip != nil && e.cidr.Contains(ip) {
				return true
			}
		case ip == nil && (name == e.name || strings.HasSuffix(name, "."+e.name)):
			return true
		}
	}
	return false
}

// forConnect is the proxy a guest's CONNECT to dest goes through; nil: none.
func (u *upstream) forConnect(dest string) *url.URL {
	if u == nil || u.https == nil || u.bypass(dest) {
		return nil
	}
	return u.https
}

// forHTTP is the proxy a guest's plain-HTTP request to dest goes through.
func (u *upstream) forHTTP(dest string) *url.URL {
	if u == nil || u.http == nil || u.bypass(dest) {
		return nil
	}
	return u.http
}

// connect opens a tunnel to dest through the proxy `via`.
func (u *upstream) connect(ctx context.Context, via *url.URL, dest string) (net.Conn, error) {
	c, err := u.dial(ctx, "tcp", via.Host)
	if err != nil {
		return nil, fmt.Errorf("the host's proxy %s: %v", via.Host, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	req := "CONNECT " + dest + " HTTP/1.1\r\nHost: " + dest + "\r\n"
	if via.User != nil {
		pass, _ := via.User.Password()
		cred := base64.StdEncoding.EncodeToString([]byte(via.User.Username() + ":" + pass))
		req += "Proxy-Authorization: Basic " + cred + "\r\n"
	}
	br := bufio.NewReader(c)
	var resp *http.Response
	if _, err = c.Write([]byte(req + "\r\n")); err == nil {
		resp, err = http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("the host's proxy %s: %v", via.Host, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("the host's proxy %s answered CONNECT %s with %s", via.Host, dest, resp.Status)
	}
	_ = c.SetDeadline(time.Time{})
	if br.Buffered() == 0 {
		return c, nil
	}
	return &bufferedConn{Conn: c, r: br}, nil // the origin spoke first (an SSH banner, say)
}

// bufferedConn reads what the proxy's reader already holds first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
