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
from collections.abc import Sequence

from microbox import locks, portmap
from microbox.agent.channel import Channel
from microbox.core.boxdir import PORTS, BoxDir
from microbox.errors import AgentError
from microbox.portmap import PortMap
from microbox.vmm import process

EXIT_TIMEOUT = 5.0


def connect(box: BoxDir, deadline: float, published: Sequence[PortMap] = ()) -> Channel:
    """A session through the box's shim, starting a shim if none serves it
    (which serves `published` again, and the proxy if the box has a policy)."""
    try:
        return Channel.connect(box.mux, deadline)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    ensure(box, published)
    try:
        return Channel.connect(box.mux, deadline)
    except OSError as exc:
        raise AgentError(f"cannot reach the box's shim: {exc}") from None


def ensure(box: BoxDir, published: Sequence[PortMap] = ()) -> None:
    """Start a shim for the running box unless one serves it: a killed shim's
    published ports listen again from here (reconcile calls this for a box
    with ports, so any command on it brings them back)."""
    if not box.alive():
        raise AgentError("the box's VM is not running")
    if locks.is_held(box.shim_lock):
        return
    # imported only here: connecting to a live shim (`microbox exec`) needs neither
    from microbox.core.shim_start import Forward, resolver, spawn
    from microbox.net import tap

    with locks.held(box.path / "shim.spawn.lock"):
        if locks.is_held(box.shim_lock):
            return
        dns = resolver(box.path.name, tap.dns_socket(box.path.name),
                       tap.gateway_socket(box.path.name)) if tap.present(box.path.name) else None
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
                dns.gateway.close()


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
