"""The shim of a box: the one small host process that owns the box's agent
ports for its whole life and multiplexes every client over them, so a box
takes any number of execs, shells, copies and forwarded connections at once
(docs/architecture.md). It exits by itself when the VM does.

Clients connect to `<box dir>/mux.sock` and speak protocol v1 as they would on
a port of their own. A `--net user` box's shim also serves its egress proxy on
`<box dir>/proxy.sock`, deciding connections by the policy file named on its
command line; a `--net tap` box's serves its resolver on a socket in the
box's namespace, and fills the box's firewall set with what it allowed
(docs/net.md). A running box without a live shim (one started by an
older microbox, or whose shim was killed) gets a new one on first use.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from microbox import locks, portmap
from microbox.agent.channel import Channel
from microbox.artifacts import shim as shim_build
from microbox.core.boxdir import BoxDir
from microbox.core.vm import PORTS
from microbox.errors import AgentError, HostError, VMError
from microbox.net import nft, tap
from microbox.portmap import PortMap
from microbox.vmm import process

READY_TIMEOUT = 15.0
EXIT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Forward:
    """A listening socket bound by the host, served by the shim."""

    sock: socket.socket
    guest_port: int


def binary() -> str:
    path = shim_build.binary_path()
    if not path.exists():
        raise HostError("the box shim has not been built yet", "microbox agent build")
    return str(path)


@dataclass(frozen=True)
class Resolver:
    """A --net tap box's resolver: its UDP socket (inside the box's namespace)
    and the firewall set the shim fills with the addresses of allowed names."""

    sock: socket.socket
    nft_set: str


def resolver(box_id: str, sock: socket.socket) -> Resolver:
    return Resolver(sock, nft.names_set(box_id))


def spawn(box: BoxDir, ports: int, forwards: Sequence[Forward] = (),
          policy: Path | None = None, dns: Resolver | None = None) -> None:
    """Start the shim of a running box and wait until it serves (with `policy`,
    its egress proxy too, or with `dns` the box's resolver instead); a shim that
    is already serving the box is left as it is."""
    argv = [binary(), "-dir", str(box.path), "-ports", str(ports)]
    fds = [f.sock.fileno() for f in forwards]
    for f in forwards:
        argv += ["-forward", f"{f.sock.fileno()}:{f.guest_port}"]
    if policy is not None:
        argv += ["-policy", str(policy)]
    if dns is not None:
        argv += ["-no-proxy", "-dns-fd", str(dns.sock.fileno()), "-nft-set", dns.nft_set]
        fds.append(dns.sock.fileno())
    with open(box.shim_log, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
            pass_fds=fds, start_new_session=True,
        )
    assert proc.stdout is not None
    with proc.stdout as out:
        ready, _, _ = select.select([out], [], [], READY_TIMEOUT)
        line = out.readline().decode(errors="replace").strip() if ready else ""
    if line == "ready":
        return  # the shim lives on; subprocess reaps it if this process outlives it
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()
    if "another shim serves this box" in line:
        return
    raise VMError(f"the box's shim did not start: {line or 'no answer'}")


def connect(box: BoxDir, deadline: float, published: Sequence[PortMap] = ()) -> Channel:
    """A session through the box's shim, starting a shim if none serves it
    (which serves `published` again, and the proxy if the box has a policy)."""
    try:
        return Channel.connect(box.mux, deadline)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    if not box.alive():
        raise AgentError("the box's VM is not running")
    with locks.held(box.path / "shim.spawn.lock"):
        if not locks.is_held(box.shim_lock):
            dns = resolver(box.path.name, tap.dns_socket(box.path.name)) \
                if tap.present(box.path.name) else None
            socks = []
            try:
                socks = portmap.bind(published)
                policy = box.net_policy if box.net_policy.exists() else None
                spawn(box, PORTS, [Forward(s, m.guest_port)
                                   for s, m in zip(socks, published, strict=True)], policy, dns)
            finally:
                for s in socks:
                    s.close()
                if dns is not None:
                    dns.sock.close()
    try:
        return Channel.connect(box.mux, deadline)
    except OSError as exc:
        raise AgentError(f"cannot reach the box's shim: {exc}") from None


def pid(box: BoxDir) -> int | None:
    """The live shim's pid, or None when no shim holds the box."""
    if not locks.is_held(box.shim_lock):
        return None
    try:
        return int(box.shim_lock.read_text().strip())
    except (OSError, ValueError):
        return None


def wait_gone(box: BoxDir, timeout: float = EXIT_TIMEOUT) -> None:
    """After the VM exited: wait for its shim to follow; kill one that does not."""
    shim = pid(box)
    if shim is None:
        return
    if not process.wait_exit(shim, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(shim, 9)
        process.wait_exit(shim, timeout)


def kill(box: BoxDir) -> None:
    """End the shim of a box whose VM is gone (gc, crashed boxes)."""
    shim = pid(box)
    if shim is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(shim, 15)
        wait_gone(box, timeout=2.0)
