"""Stand-in "internet" servers for networking tests and benchmarks (root only).

A network namespace joined to the host by a veth pair holds the stand-in
addresses, so that to the box's proxy they are neither loopback nor the
host's own addresses (an address on a host interface would be refused as
the host's own). The host routes each address to the namespace; nothing
here can reach beyond this machine. On each address, in threads:

    :80    HTTP (http.server): GET / answers "standin ADDR\\n", GET /bytes/N N bytes
    :443   the same over TLS, when start() is given a certificate and key
    :9000  sink: reads until end of input, then answers the byte count and closes
    :7     echo

`close()` deletes the namespace (and with it the veth and the host's routes).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import socketserver
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CLONE_NEWNET = 0x40000000
HOST_SIDE = "10.203.1.1/30"  # the veth pair's own link
NS_SIDE = "10.203.1.2"
_libc = ctypes.CDLL(None, use_errno=True)


def available() -> str | None:
    """Why stand-ins cannot be made here, or None."""
    if os.geteuid() != 0:
        return "stand-in servers need root (a network namespace and routes)"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "iproute2 cannot manage network namespaces here"
    return None


def _ip(*args: str, ns: str | None = None) -> None:
    """`ip ARGS`, in the namespace `ns` if given: entered with nsenter, which
    switches the network namespace only. (`ip -n` also makes a mount namespace
    and runs `mount --make-rslave /`, which fails where / is no mount point,
    as in a chroot.)"""
    enter = ["nsenter", f"--net=/run/netns/{ns}"] if ns else []
    done = subprocess.run([*enter, "ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class _Http(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        addr = str(self.server.server_address[0])  # type: ignore[index]
        if self.path.startswith("/bytes/"):
            n = int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            block = b"\0" * 65536
            while n > 0:
                self.wfile.write(block[:n])
                n -= len(block)
            return
        body = f"standin {addr}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Sink(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        n = 0
        while chunk := self.request.recv(1 << 16):
            n += len(chunk)
        self.request.sendall(f"{n}\n".encode())


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while chunk := self.request.recv(1 << 16):
            self.request.sendall(chunk)


class _Tcp(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Web(ThreadingHTTPServer):
    daemon_threads = True


@dataclass
class StandIns:
    ns: str
    addresses: tuple[str, ...]
    servers: list[socketserver.BaseServer] = field(default_factory=list)

    def close(self) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


def _in_netns(ns: str, make: Callable[[], socketserver.BaseServer]) -> socketserver.BaseServer:
    """Make a server (its listening socket) inside the namespace, from a thread
    that joins it; the socket stays in the namespace whoever serves it."""
    result: list[socketserver.BaseServer | BaseException] = []

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            result.append(make())
        except BaseException as exc:  # handed to the caller
            result.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    made = result[0]
    if isinstance(made, BaseException):
        raise made
    threading.Thread(target=made.serve_forever, daemon=True).start()
    return made


def _https(addr: str, cert: tuple[str, str]) -> _Web:
    server = _Web((addr, 443), _Http)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    return server


def start(addresses: Sequence[str], name: str | None = None,
          cert: tuple[str, str] | None = None) -> StandIns:
    """Stand-in servers on `addresses` (each a /32 in the namespace); with
    `cert` (certificate and key files), HTTPS on 443 too."""
    ns = name or f"mbt{os.getpid()}"
    host_if, ns_if = f"{ns}a"[-15:], f"{ns}b"[-15:]
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # a leftover
    _ip("netns", "add", ns)
    made = StandIns(ns, tuple(addresses))
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns)
        _ip("addr", "add", HOST_SIDE, "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("link", "set", "lo", "up", ns=ns)
        _ip("addr", "add", f"{NS_SIDE}/30", "dev", ns_if, ns=ns)
        _ip("link", "set", ns_if, "up", ns=ns)
        _ip("route", "add", "default", "via", HOST_SIDE.split("/")[0], ns=ns)
        for addr in addresses:
            _ip("addr", "add", f"{addr}/32", "dev", ns_if, ns=ns)
            _ip("route", "add", f"{addr}/32", "via", NS_SIDE)
        for addr in addresses:
            made.servers.append(_in_netns(ns, partial(_Web, (addr, 80), _Http)))
            made.servers.append(_in_netns(ns, partial(_Tcp, (addr, 9000), _Sink)))
            made.servers.append(_in_netns(ns, partial(_Tcp, (addr, 7), _Echo)))
            if cert is not None:
                made.servers.append(_in_netns(ns, partial(_https, addr, cert)))
    except BaseException:
        made.close()
        raise
    return made


def get(addr: str, path: str = "/", port: int = 80, timeout: float = 10.0) -> bytes:
    """GET from the host directly (the floor of a benchmark; a check in a test)."""
    with socket.create_connection((addr, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n".encode())
        data = bytearray()
        while chunk := s.recv(1 << 16):
            data += chunk
    return bytes(data).split(b"\r\n\r\n", 1)[1]


@contextlib.contextmanager
def loopback_server(handler: type[BaseHTTPRequestHandler] | None = None) -> Iterator[int]:
    """An HTTP server on the host's 127.0.0.1 (a port of its own) answering with
    `handler` (the stand-ins' own by default); yields the port."""
    srv = _Web(("127.0.0.1", 0), handler or _Http)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield int(srv.server_address[1])
    finally:
        srv.shutdown()
        srv.server_close()
