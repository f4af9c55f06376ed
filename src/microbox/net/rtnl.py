"""The little of rtnetlink (and of network namespaces) that `--net tap` needs,
spoken directly: veth pairs, addresses, routes, links up and down, and named
namespaces in /run/netns as iproute2 makes them.

Why not pyroute2: importing it costs 0.20-0.25 s on these machines (its
package imports asyncio, multiprocessing and its whole database layer), four
times the 50 ms a networked box may add to a start (docs/net.md). These
requests are a few dozen bytes each and need no library.

Every call acts in the network namespace of the calling thread
(tap._in_netns runs code inside a box's namespace).
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

NETNS_DIR = Path("/run/netns")

RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE = 24
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLM_F_DUMP = 0x300
NLA_F_NESTED = 0x8000
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 1, 3, 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_GATEWAY = 5
IFF_UP = 0x1
CLONE_NEWNET = 0x40000000
MS_BIND, MNT_DETACH = 0x1000, 0x2

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


class NetlinkError(OSError):
    pass


def _attr(kind: int, data: bytes) -> bytes:
    head = struct.pack("HH", 4 + len(data), kind)
    return head + data + b"\0" * (-len(data) % 4)


def _nested(kind: int, *attrs: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(attrs))


def _name(name: str) -> bytes:
    return name.encode() + b"\0"


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return struct.pack("BxHiII", socket.AF_UNSPEC, 0, index, flags, change)


def _attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The attributes in `data` (bounds-checked: it comes from the kernel, but a
    short or odd buffer ends the walk instead of misreading)."""
    off = 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("HH", data, off)
        if length < 4 or off + length > len(data):
            return
        yield kind & ~NLA_F_NESTED, data[off + 4:off + length]
        off += (length + 3) & ~3


class Netlink:
    """One rtnetlink socket, in the namespace of the thread that opens it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        self.sock.bind((0, 0))
        self.seq = 0

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self.seq += 1
        self.sock.send(struct.pack("IHHII", 16 + len(body), kind, flags | NLM_F_REQUEST,
                                   self.seq, 0) + body)
        return self.seq

    def _replies(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """(type, payload) of each reply to `seq` until DONE or the ack."""
        while True:
            data = self.sock.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                length, kind, _, rseq, _ = struct.unpack_from("IHHII", data, off)
                if length < 16 or off + length > len(data):
                    raise NetlinkError(errno.EPROTO, "a malformed netlink reply")
                payload = data[off + 16:off + length]
                off += (length + 3) & ~3
                if rseq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("i", payload)
                    if code:
                        raise NetlinkError(-code, os.strerror(-code))
                    return
                yield kind, payload

    def request(self, kind: int, body: bytes, flags: int = 0) -> None:
        for _ in self._replies(self._send(kind, flags | NLM_F_ACK, body)):
            pass

    def add_veth(self, name: str, peer: str, peer_netns_fd: int) -> None:
        """A veth pair: `name` here, `peer` in the namespace of `peer_netns_fd`."""
        peer_info = _ifinfo() + _attr(IFLA_IFNAME, _name(peer)) + _attr(
            IFLA_NET_NS_FD, struct.pack("I", peer_netns_fd))
        info = _nested(IFLA_LINKINFO, _attr(IFLA_INFO_KIND, b"veth"),
                       _nested(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_info)))
        self.request(RTM_NEWLINK, _ifinfo() + _attr(IFLA_IFNAME, _name(name)) + info,
                     NLM_F_CREATE | NLM_F_EXCL)

    def set_link(self, name: str, *, up: bool | None = None, alias: str | None = None,
                 mac: str | None = None) -> None:
        index = socket.if_nametoindex(name)
        flags = (IFF_UP if up else 0, IFF_UP) if up is not None else (0, 0)
        body = _ifinfo(index, *flags)
        if alias is not None:
            body += _attr(IFLA_IFALIAS, alias.encode())
        if mac is not None:
            body += _attr(IFLA_ADDRESS, bytes.fromhex(mac.replace(":", "")))
        self.request(RTM_NEWLINK, body)

    def delete_link(self, name: str) -> bool:
        """Delete a link (a veth takes its peer along); False if there was none."""
        try:
            index = socket.if_nametoindex(name)
        except OSError:
            return False
        try:
            self.request(RTM_DELLINK, _ifinfo(index))
        except NetlinkError as exc:
            if exc.errno == errno.ENODEV:
                return False
            raise
        return True

    def add_address(self, name: str, address: str, prefixlen: int) -> None:
        packed = ipaddress.IPv4Address(address).packed
        body = struct.pack("BBBBI", socket.AF_INET, prefixlen, 0, 0, socket.if_nametoindex(name))
        self.request(RTM_NEWADDR, body + _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed),
                     NLM_F_CREATE | NLM_F_EXCL)

    def add_default_route(self, gateway: str) -> None:
        # main table, boot protocol, universe scope, unicast
        body = struct.pack("BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 0)
        self.request(RTM_NEWROUTE, body + _attr(RTA_GATEWAY,
                                                ipaddress.IPv4Address(gateway).packed),
                     NLM_F_CREATE | NLM_F_EXCL)

    def addresses(self) -> list[ipaddress.IPv4Address]:
        """Every IPv4 address on every link of this namespace."""
        seq = self._send(RTM_GETADDR, NLM_F_DUMP, struct.pack("BBBBI", socket.AF_INET, 0, 0, 0, 0))
        found = []
        for kind, payload in self._replies(seq):
            if kind != RTM_NEWADDR or len(payload) < 8:
                continue
            for attr, value in _attrs(payload[8:]):
                if attr == IFA_ADDRESS and len(value) == 4:
                    found.append(ipaddress.IPv4Address(value))
        return found


def _check(ret: int, what: str) -> None:
    if ret != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def in_thread(work: Callable[[], T], name: str) -> T:
    """Run `work` in a thread of its own and hand back its result or error: a
    thread that changes its network namespace (unshare, setns) takes the
    change with it when it ends, and the rest of this process never moves."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # handed to the caller
            failure.append(exc)

    t = threading.Thread(target=run, name=name)
    t.start()
    t.join()
    if failure:
        raise failure[0]
    return result[0]


def create_netns(name: str) -> None:
    """A named namespace (/run/netns/NAME, as `ip netns add` makes it): a
    thread unshares, and its namespace is bind-mounted to the name."""
    NETNS_DIR.mkdir(mode=0o755, exist_ok=True)
    path = NETNS_DIR / name
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))

    def unshare() -> None:
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        src = f"/proc/self/task/{_libc.gettid()}/ns/net".encode()
        _check(_libc.mount(src, str(path).encode(), b"none", MS_BIND, None),
               f"bind-mount {path}")

    try:
        in_thread(unshare, f"unshare-{name}")
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def in_netns(name: str, work: Callable[[], T]) -> T:
    """Run `work` inside the named namespace: what it opens (sockets, a TAP,
    processes it starts) belongs to the namespace."""
    def inside() -> T:
        enter_netns(name)
        return work()
    return in_thread(inside, f"netns-{name}")


def remove_netns(name: str) -> None:
    path = NETNS_DIR / name
    _libc.umount2(str(path).encode(), MNT_DETACH)
    path.unlink(missing_ok=True)


def enter_netns(name: str) -> None:
    """Move the calling thread into the named namespace."""
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"enter network namespace {name}")
    finally:
        os.close(fd)
