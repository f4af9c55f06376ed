"""Starting the shim of a running box (microbox.core.shim says what it is)."""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from microbox.artifacts import shim as shim_build
from microbox.core.boxdir import BoxDir
from microbox.errors import HostError, VMError
from microbox.net import nft

READY_TIMEOUT = 15.0


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
    and the firewall set the shim fills with the addresses of allowed names;
    and the host gateway's listener (host.microbox.internal), beside it."""

    sock: socket.socket
    nft_set: str
    gateway: socket.socket


def resolver(box_id: str, sock: socket.socket, gateway: socket.socket) -> Resolver:
    return Resolver(sock, nft.names_set(box_id), gateway)


@dataclass(frozen=True)
class Owner:
    """An owner the shim outlives only to kill the VMM (a pool's box taken by
    `run` without -d): the read end of a pipe that only the owner writes, and a
    pidfd of the VMM."""

    pipe: int
    vmm: int


def spawn(box: BoxDir, ports: int, forwards: Sequence[Forward] = (),
          policy: Path | None = None, dns: Resolver | None = None,
          owner: Owner | None = None) -> None:
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
        argv += ["-no-proxy", "-dns-fd", str(dns.sock.fileno()), "-nft-set", dns.nft_set,
                 "-host-fd", str(dns.gateway.fileno())]
        fds += [dns.sock.fileno(), dns.gateway.fileno()]
    if owner is not None:
        argv += ["-owner-fd", str(owner.pipe), "-vmm-pidfd", str(owner.vmm)]
        fds += [owner.pipe, owner.vmm]
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
