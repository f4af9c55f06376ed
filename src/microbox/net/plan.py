"""The addressing plan of a networked box. `--net user`: QEMU's user-mode
network, restricted so that the guest reaches nothing but one forward, the
box's egress proxy; every exec gets proxy variables. `--net tap`: the same
guest address and gateway on a TAP in the box's own network namespace, routed
by the host, with the box's resolver on the gateway (net/tap.py). The guest is
configured by its agent from boot parameters (docs/protocol.md, "Boot
parameters").
"""

from __future__ import annotations

from microbox.agent.wire_gen import Capability

MODES = ("user", "none", "tap")
DEFAULT_MODE = "user"

NETWORK = "10.0.2.0/24"  # QEMU's user-mode network (its defaults, written out)
GATEWAY = "10.0.2.2"  # user: the stack itself (restrict=on: it forwards nothing); tap: the
#                       box's namespace, which routes, and where its resolver listens
GUEST = "10.0.2.15/24"
IFACE = "eth0"
PROXY_ADDR = "10.0.2.100"  # the one forward (guestfwd) out of the box
PROXY_PORT = 3128
PROXY_URL = f"http://{PROXY_ADDR}:{PROXY_PORT}"
NO_PROXY = "localhost,127.0.0.1"
# The host by name (docs/net.md, "Host services"): the gateway, in the guest's
# /etc/hosts (the agent writes it from microbox.hosts=) and in a tap box's
# resolver; the box's shim carries a connection to it, on any port, to the
# host's loopback when the policy allows (--allow-private).
HOST_NAME = "host.microbox.internal"
HOST_TARGET = "127.0.0.1"
# --net tap: the namespace sends every TCP connection to the gateway to this listener
HOST_PORT = 3128


# A --net user box has no resolver (its proxy resolves names): its lookups go
# to the guest's own loopback, where nothing listens, and fail at once. Left to
# the image's resolv.conf they went to an address the restricted stack drops,
# and every lookup (git's identity, sudo, getfqdn) hung for 10 s.
NO_RESOLVER = "127.0.0.1"


def boot_parameter(mode: str) -> str:
    """The kernel arguments the agent configures the network from."""
    hosts = f"microbox.hosts={HOST_NAME}:{GATEWAY}"
    if mode == "user":
        return f"microbox.net={IFACE},{GUEST},{GATEWAY} microbox.dns={NO_RESOLVER} {hosts}"
    if mode == "tap":
        return f"microbox.net={IFACE},{GUEST},{GATEWAY} microbox.dns={GATEWAY} {hosts}"
    return ""


def capability(mode: str) -> Capability | None:
    """The agent capability a box of `mode` needs (docs/protocol.md)."""
    return {"user": Capability.NET, "tap": Capability.DNS}.get(mode)


def exec_env(mode: str) -> dict[str, str]:
    """Defaults for every exec in a box of `mode` (the box's -e and exec's -e win)."""
    if mode != "user":
        return {}
    return {"http_proxy": PROXY_URL, "https_proxy": PROXY_URL, "HTTP_PROXY": PROXY_URL,
            "HTTPS_PROXY": PROXY_URL, "no_proxy": NO_PROXY, "NO_PROXY": NO_PROXY}
