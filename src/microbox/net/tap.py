"""`--net tap` (root): a box's own network namespace, joined to the host by a
veth pair, with a TAP device whose file descriptor is handed to QEMU (which
needs no privilege for it). docs/net.md, "--net tap".

    guest eth0 10.0.2.15/24 ──▶ tap0 10.0.2.2 (ns; the resolver listens here, and TCP
        to it goes to the host gateway's listener: host.microbox.internal)
        netns microbox-<id>: forwards, masquerades out of its eth0 (10.239.x.odd/31)
    host mbx<id12> 10.239.x.even/31 ──▶ table inet microbox decides ──▶ routed out,
        masqueraded as the host

Every box has the same guest address and MAC, and the same gateway address
and MAC, inside its own namespace (warm clones and forks need that); only its link addresses differ,
one /31 of the pool (MICROBOX_TAP_POOL, default 10.239.0.0/16) per box.
The host side's alias names the box dir, so any microbox on the host (any data
dir) can tell a live box's network from a stray one. All changes to the
host's network state happen under one host-wide lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import secrets
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from microbox import locks, paths
from microbox.errors import HostError, InvalidSpec
from microbox.net import nft, plan, rtnl
from microbox.net.rtnl import NETNS_DIR, Netlink

NETNS_PREFIX = "microbox-"
HOST_LOCK = Path("/run/microbox-net.lock")  # all data dirs share the kernel's state
TAP = "tap0"
# The gateway's MAC, the same in every box: a clone's guest (a fork, a warm
# start) keeps the ARP entry its template or parent learned.
GATEWAY_MAC = "02:6d:62:00:00:02"
NS_LINK = "eth0"
_TUNSETIFF = 0x400454CA
_IFF_TAP, _IFF_NO_PI, _IFF_VNET_HDR = 0x0002, 0x1000, 0x4000


def pool() -> ipaddress.IPv4Network:
    text = os.environ.get("MICROBOX_TAP_POOL", "10.239.0.0/16")
    try:
        net = ipaddress.IPv4Network(text)
    except ValueError:
        raise InvalidSpec(f"bad MICROBOX_TAP_POOL {text!r}: use an IPv4 range such as "
                          "10.239.0.0/16") from None
    if net.prefixlen > 30:
        raise InvalidSpec(f"MICROBOX_TAP_POOL {text} is too small; use a /30 or larger")
    return net


def netns_name(box_id: str) -> str:
    return f"{NETNS_PREFIX}{box_id}"


def available() -> None:
    """Refuse `--net tap` where it cannot work, in one sentence (before anything is made)."""
    if os.geteuid() != 0:
        raise InvalidSpec("--net tap needs root (it makes a network namespace, a TAP device "
                          "and nftables rules); run microbox as root, or use --net user")
    if not os.path.exists("/dev/net/tun"):
        raise HostError("this host has no /dev/net/tun (--net tap needs it)", "modprobe tun")
    nft.binary()


@contextlib.contextmanager
def host_lock() -> Iterator[None]:
    with locks.held(HOST_LOCK):
        yield


def _set_sysctl(path: str, value: str) -> None:
    with open(path, "r+") as f:
        if f.read().strip() != value:
            f.seek(0)
            f.write(value)


def open_tap(name: str = TAP) -> int:
    """A new TAP device (in the calling thread's namespace); it lives while the fd does."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF,
                    struct.pack("16sH", name.encode(), _IFF_TAP | _IFF_NO_PI | _IFF_VNET_HDR))
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def scratch(mode: str) -> Iterator[int | None]:
    """For a VMM that only makes or converts a template of a --net tap box: a
    TAP on no network (in the host's namespace, down, no address) that gives
    it the same device set as the box; it vanishes with the VMM. None for
    other modes."""
    if mode != "tap":
        yield None
        return
    fd = open_tap(f"mbs{secrets.token_hex(6)}")
    try:
        yield fd
    finally:
        os.close(fd)


def _resolver_socket() -> socket.socket:
    """UDP on the gateway's port 53, in the calling thread's namespace."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((plan.GATEWAY, 53))
    return s


def dns_socket(box_id: str) -> socket.socket:
    """The box's resolver socket, made inside its namespace (for a new shim)."""
    return rtnl.in_netns(netns_name(box_id), _resolver_socket)


def _gateway_socket() -> socket.socket:
    """TCP on the gateway's HOST_PORT, in the calling thread's namespace: the
    namespace sends every TCP connection to the gateway here (the shim carries
    it to the host's loopback, or refuses it)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((plan.GATEWAY, plan.HOST_PORT))
        s.listen(128)
    except BaseException:
        s.close()
        raise
    return s


def gateway_socket(box_id: str) -> socket.socket:
    """The box's host-gateway listener, made inside its namespace (for a new shim)."""
    return rtnl.in_netns(netns_name(box_id), _gateway_socket)


@dataclass
class Attachment:
    """A box's network, made: the TAP fd for QEMU, the resolver socket and the
    host gateway's listener for the shim."""

    box_id: str
    tap: int
    dns: socket.socket
    gateway: socket.socket

    def close(self) -> None:
        """Close this process's copies (QEMU and the shim hold their own)."""
        if self.tap >= 0:
            os.close(self.tap)
            self.tap = -1
        self.dns.close()
        self.gateway.close()


def _allocate(nl: Netlink, net: ipaddress.IPv4Network) -> tuple[str, str]:
    """The lowest free /31 of the pool: (host side, namespace side)."""
    used = {(int(a) - int(net.network_address)) // 2 for a in nl.addresses() if a in net}
    for i in range(net.num_addresses // 2):
        if i not in used:
            host = net.network_address + 2 * i
            return str(host), str(host + 1)
    raise HostError(f"every address of the tap pool {net} is in use",
                    "export MICROBOX_TAP_POOL=<a larger range>")


def _inside(host_addr: str, ns_addr: str) -> tuple[int, socket.socket, socket.socket]:
    """Configure the namespace (from a thread inside it); returns the TAP fd,
    the resolver socket and the host gateway's listener."""
    tap = open_tap()
    try:
        with Netlink() as nl:
            nl.set_link("lo", up=True)
            nl.add_address(NS_LINK, ns_addr, 31)
            nl.set_link(NS_LINK, up=True)
            nl.add_default_route(host_addr)
            nl.set_link(TAP, mac=GATEWAY_MAC)
            nl.add_address(TAP, plan.GATEWAY, ipaddress.IPv4Network(plan.NETWORK).prefixlen)
            nl.set_link(TAP, up=True)
        _set_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
        nft.run(f"add table ip {nft.TABLE}\n"
                f"add chain ip {nft.TABLE} postrouting {{ type nat hook postrouting "
                "priority srcnat; policy accept; }\n"
                f'add rule ip {nft.TABLE} postrouting oifname "{NS_LINK}" masquerade\n'
                f"add chain ip {nft.TABLE} prerouting {{ type nat hook prerouting "
                "priority dstnat; policy accept; }\n"
                f'add rule ip {nft.TABLE} prerouting iifname "{TAP}" ip daddr {plan.GATEWAY} '
                f"meta l4proto tcp redirect to :{plan.HOST_PORT}\n")
        resolver = _resolver_socket()
        try:
            gateway = _gateway_socket()
        except BaseException:
            resolver.close()
            raise
    except BaseException:
        os.close(tap)
        raise
    return tap, resolver, gateway


def setup(box_id: str, box_path: Path, rules: nft.Rules) -> Attachment:
    """Make the box's namespace, links, TAP and firewall chain. On failure
    nothing is left."""
    net = pool()
    name, link = netns_name(box_id), nft.link_of(box_id)
    with host_lock():
        if present(box_id) or _has_link(box_id):
            _remove(box_id)  # a leftover of a crash of this very box
        try:
            rtnl.create_netns(name)
            nsfd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with Netlink() as nl:
                    host_addr, ns_addr = _allocate(nl, net)
                    nl.add_veth(link, NS_LINK, nsfd)
                    nl.set_link(link, alias=str(box_path))
                    nl.add_address(link, host_addr, 31)
                    nl.set_link(link, up=True)
            finally:
                os.close(nsfd)
            _set_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
            tap, dns, gateway = rtnl.in_netns(name, lambda: _inside(host_addr, ns_addr))
            try:
                nft.add(box_id, rules, str(net))
            except BaseException:
                os.close(tap)
                dns.close()
                gateway.close()
                raise
        except BaseException:
            _remove(box_id)
            raise
    return Attachment(box_id, tap, dns, gateway)


def _remove(ident: str) -> None:
    """Remove whatever exists of a box's network (under the host lock); `ident`
    is the box's id or its first 12 digits."""
    with contextlib.suppress(HostError):  # without nft there are no chains to remove
        nft.remove(ident)
    with Netlink() as nl:
        nl.delete_link(nft.link_of(ident))  # its peer in the namespace goes with it
    if NETNS_DIR.exists():
        for entry in os.listdir(NETNS_DIR):
            if entry.startswith(NETNS_PREFIX + ident):
                rtnl.remove_netns(entry)


def present(box_id: str) -> bool:
    return (NETNS_DIR / netns_name(box_id)).exists()


def teardown(box_id: str) -> None:
    """Remove a box's network once its VM is gone. Idempotent; cheap for a box
    that never had one."""
    if not present(box_id) and not _has_link(box_id):
        return
    with host_lock():
        _remove(box_id)


def _has_link(box_id: str) -> bool:
    return os.path.exists(f"/sys/class/net/{nft.link_of(box_id)}")


@dataclass(frozen=True)
class Stray:
    """A box network no live box owns."""

    box_id: str  # the 12-digit id, or the full id of a namespace
    what: str

    def __str__(self) -> str:
        return f"{self.what} of box {self.box_id}"


def _owner_alive(alias: str) -> bool:
    """The box dir named by a link's alias has a live VMM: its lock is held
    (core/boxdir.py's BoxDir.lock, named by paths.BOX_LOCK)."""
    return bool(alias) and locks.is_held(Path(alias) / paths.BOX_LOCK)


def strays() -> list[Stray]:
    """Namespaces, links and chains of boxes whose VM is gone (whatever data dir
    made them): a namespace without its link, a link whose box dir's lock no
    process holds, a chain without its link."""
    found: list[Stray] = []
    links: dict[str, str] = {}
    if Path("/sys/class/net").exists():
        for entry in os.listdir("/sys/class/net"):
            if entry.startswith(nft.LINK_PREFIX) and len(entry) == 15:
                try:
                    alias = Path(f"/sys/class/net/{entry}/ifalias").read_text().strip()
                except OSError:
                    alias = ""
                links[entry[3:]] = alias
    live = {short for short, alias in links.items() if _owner_alive(alias)}
    for short in sorted(set(links) - live):
        found.append(Stray(short, f"link {nft.LINK_PREFIX}{short}"))
    if NETNS_DIR.exists():
        for entry in sorted(os.listdir(NETNS_DIR)):
            if entry.startswith(NETNS_PREFIX) and entry[len(NETNS_PREFIX):][:12] not in live:
                found.append(Stray(entry[len(NETNS_PREFIX):], f"network namespace {entry}"))
    with contextlib.suppress(HostError):  # no nft: no chains either
        found += [Stray(short, f"nftables chain {nft.chain_of(short)}")
                  for short in sorted(nft.boxes() - live)]
    return found


def sweep(dry_run: bool = False) -> list[str]:
    """Remove every stray box network; returns what was (or would be) removed."""
    with host_lock():
        gone = strays()
        if not dry_run:
            for ident in sorted({s.box_id for s in gone}):
                _remove(ident)
    return [str(s) for s in gone]
