// microbox-shim: the small host process of one box. It owns the agent's
// virtio-serial ports for the box's whole life and multiplexes any number of
// host clients (on <box dir>/mux.sock) and forwarded TCP connections over
// them. For a box with a network policy (-policy, docs/net.md) it enforces
// that policy: a --net user box's egress proxy (on <box dir>/proxy.sock),
// and a --net tap box's DNS resolver (on a UDP socket the host bound in the
// box's network namespace, -dns-fd; the tap box has no proxy, -no-proxy),
// which fills the box's nftables set (-nft-set) with the addresses it
// answers, and its host gateway (-host-fd, hostgw.go). All share the
// policy and net.log. It exits when the VM does.
// See docs/architecture.md.
//
// `microbox-shim -pipe SOCKET` is the other face of the same binary: the
// per-connection process QEMU starts for the guest's proxy connections.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

type shim struct {
	dir      string
	window   uint32
	forwards []forward
	mux      net.Listener
	ended    chan error // a port's session ended: the VM exited or reset
	first    *port      // ports[0], whose HELLO reply speaks for the agent

	mu      sync.Mutex
	ports   []*port       // open, first among them for good
	spare   []string      // ports locked but not opened yet, opened as the box gets busy
	opening bool          // one of them is being opened
	retryAt time.Time     // after a failed open: no spare port is opened before this
	backoff time.Duration // the wait after the next failure
}

// spareRetry is the first wait after a spare port failed to open; each
// failure in a row doubles it, up to spareRetryMax.
var spareRetry, spareRetryMax = time.Second, time.Minute

func nextBackoff(d time.Duration) time.Duration {
	switch {
	case d < spareRetry:
		return spareRetry
	case 2*d > spareRetryMax:
		return spareRetryMax
	}
	return 2 * d
}

// pick returns the port carrying the fewest streams. When every open port
// carries one already, the next spare port is opened in the background for
// the streams to come: a box that is used one command at a time keeps one
// session (each more costs its start ~15 ms of guest time under TCG).
func (s *shim) pick() *port {
	s.mu.Lock()
	defer s.mu.Unlock()
	best := s.ports[0]
	bl := best.load()
	for _, p := range s.ports[1:] {
		if l := p.load(); l < bl {
			best, bl = p, l
		}
	}
	if bl > 0 && len(s.spare) > 0 && !s.opening && !time.Now().Before(s.retryAt) {
		path := s.spare[0]
		s.spare, s.opening = s.spare[1:], true
		go s.open(path)
	}
	return best
}

// open starts a session on one more port. One that fails (a guest too busy
// to answer its HELLO in time, say) goes back among the spare ports, tried
// again once the box is busy again after a wait; meanwhile the box goes on
// with the ports it has (a VM that is gone ends port 0's session too).
func (s *shim) open(path string) {
	p, err := openPort(path, s.window)
	s.mu.Lock()
	s.opening = false
	if err == nil {
		s.ports = append(s.ports, p)
		s.backoff = 0
	} else {
		s.spare = append(s.spare, path)
		s.backoff = nextBackoff(s.backoff)
		s.retryAt = time.Now().Add(s.backoff)
	}
	s.mu.Unlock()
	if err != nil {
		fmt.Fprintln(os.Stderr, "microbox-shim:", err)
		return
	}
	s.serve(p)
}

func (s *shim) serve(p *port) {
	go func() { _ = p.out.run(p.conn); p.conn.Close() }()
	go func() { s.ended <- p.readLoop() }()
}

type forwardList []string

func (f *forwardList) String() string     { return strings.Join(*f, ",") }
func (f *forwardList) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	dir := flag.String("dir", "", "the box directory")
	ports := flag.Int("ports", 4, "agent ports to use")
	// 1 MiB: with 256 KiB, a stream's credit ran out before the grant came
	// back through QEMU and the guest (docs/architecture.md, Flow control).
	window := flag.Uint("window", 1<<20, "per-stream flow-control window (bytes; 0: off)")
	var fwds forwardList
	flag.Var(&fwds, "forward", "FD:GUESTPORT: serve a listening socket inherited as FD")
	policyPath := flag.String("policy", "", "enforce this network policy (JSON): serve the egress proxy with it")
	noProxy := flag.Bool("no-proxy", false, "with -policy: serve no egress proxy (a --net tap box)")
	dnsFD := flag.Int("dns-fd", -1, "with -policy: serve the box's DNS resolver on this inherited UDP socket")
	hostFD := flag.Int("host-fd", -1, "with -policy: serve the box's host gateway (host.microbox.internal) "+
		"on this inherited listening TCP socket")
	nftSet := flag.String("nft-set", "", "with -dns-fd: add the addresses the resolver answers, "+
		"when the policy restricts names, to this set of table inet microbox")
	pipe := flag.String("pipe", "", "carry stdio to and from this Unix socket, then exit")
	ownerFD := flag.Int("owner-fd", -1, "the read end of the owner's pipe: when it ends, kill the VMM")
	vmmFD := flag.Int("vmm-pidfd", -1, "with -owner-fd: a pidfd of the box's VMM")
	flag.Parse()
	if *pipe != "" {
		os.Exit(runPipe(*pipe))
	}
	if *dir == "" || *ports < 1 || *policyPath == "" && (*noProxy || *dnsFD >= 0 || *hostFD >= 0) ||
		*nftSet != "" && *dnsFD < 0 || (*ownerFD >= 0) != (*vmmFD >= 0) {
		fatal(errors.New("usage: microbox-shim -dir BOXDIR [-ports N] [-forward FD:PORT]... " +
			"[-policy FILE [-no-proxy] [-dns-fd FD [-nft-set NAME]] [-host-fd FD]] [-owner-fd FD -vmm-pidfd FD]"))
	}
	s := &shim{dir: *dir, window: uint32(*window)}
	lock, err := takeLock(filepath.Join(*dir, "shim.lock"))
	if err != nil {
		fatal(err)
	}
	defer lock.Close()
	for _, spec := range fwds {
		f, err := parseForward(spec)
		if err != nil {
			fatal(err)
		}
		s.forwards = append(s.forwards, f)
	}
	var locked []string
	for n := 0; n < *ports; n++ {
		if !tryLock(filepath.Join(*dir, fmt.Sprintf("port%d.lock", n))) {
			continue // a client of the port from before the shim: leave it be
		}
		locked = append(locked, filepath.Join(*dir, fmt.Sprintf("port%d.sock", n)))
	}
	if len(locked) == 0 {
		fatal(errors.New("every agent port is held by another client"))
	}
	first, err := openPort(locked[0], s.window)
	if err != nil {
		fatal(err)
	}
	s.first, s.ports, s.spare = first, []*port{first}, locked[1:]
	s.ended = make(chan error, len(locked))
	var px *proxy
	var pxLn net.Listener
	var dns *dnsServer
	var dnsConn net.PacketConn
	var hostLn net.Listener
	var pol *policy
	var log *netLog
	proxyPath := filepath.Join(*dir, "proxy.sock")
	if *policyPath != "" {
		pol, log, err = loadNet(*policyPath, filepath.Join(*dir, "net.log"))
		if err != nil {
			fatal(err)
		}
		if !*noProxy {
			px = newProxy(pol, log)
			px.stats = openNetStats(filepath.Join(*dir, "net-stats.json"), log)
			go px.stats.run()
			if pxLn, err = px.listen(proxyPath); err != nil {
				fatal(err)
			}
		}
		if *dnsFD >= 0 {
			if dns, dnsConn, err = openDNS(pol, log, *dnsFD, *nftSet); err != nil {
				fatal(err)
			}
		}
		if *hostFD >= 0 {
			if hostLn, err = openHostGateway(*hostFD); err != nil {
				fatal(err)
			}
		}
	}
	muxPath := filepath.Join(*dir, "mux.sock")
	_ = os.Remove(muxPath)
	old := syscall.Umask(0o077)
	s.mux, err = net.Listen("unix", muxPath)
	syscall.Umask(old)
	if err != nil {
		fatal(err)
	}
	s.serve(first)
	for _, f := range s.forwards {
		go s.serveForward(f)
	}
	go s.accept()
	if px != nil {
		go func() { _ = px.serve(pxLn) }()
	}
	if dns != nil {
		go func() {
			if err := dns.serve(dnsConn); err != nil {
				fmt.Fprintln(os.Stderr, "microbox-shim: dns:", err)
			}
		}()
	}
	if hostLn != nil {
		go func() {
			if err := serveHostGateway(pol, log, hostLn); err != nil {
				fmt.Fprintln(os.Stderr, "microbox-shim: host gateway:", err)
			}
		}()
	}
	if *ownerFD >= 0 {
		owner, vmm := os.NewFile(uintptr(*ownerFD), "owner"), *vmmFD
		go func() {
			if err := watchOwner(owner, vmm); err != nil {
				fmt.Fprintln(os.Stderr, "microbox-shim: killing the VMM of a departed owner:", err)
			}
		}()
	}
	fmt.Println("ready")
	os.Stdout.Close()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	select {
	case err = <-s.ended: // the VM exited, reset, or its agent failed
		if err != nil && !errors.Is(err, io.EOF) {
			fmt.Fprintln(os.Stderr, "microbox-shim:", err)
		}
	case <-sigs:
	}
	_ = os.Remove(muxPath)
	if px != nil {
		_ = os.Remove(proxyPath)
	}
}

// loadNet reads the box's policy and opens its net.log, once for the proxy
// and the resolver both.
func loadNet(policyPath, logPath string) (*policy, *netLog, error) {
	pol, err := loadPolicy(policyPath)
	if err != nil {
		return nil, nil, err
	}
	log, err := openNetLog(logPath)
	if err != nil {
		return nil, nil, err
	}
	return pol, log, nil
}

func (s *shim) accept() {
	for {
		conn, err := s.mux.Accept()
		if err != nil {
			return
		}
		go s.serveClient(conn)
	}
}

func fatal(err error) {
	fmt.Println("error:", err)
	os.Exit(1)
}

func takeLock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, errors.New("another shim serves this box")
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("%d\n", os.Getpid())), 0)
	return f, nil
}

// tryLock takes a port's client lock for the life of this process.
func tryLock(path string) bool {
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CREAT|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return false
	}
	if syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		syscall.Close(fd)
		return false
	}
	return true // held until exit
}

func isBadFrame(err error) bool { return errors.Is(err, errBadFrame) }
