"""The addressing plan of a `--net user` box: QEMU's user-mode network,
restricted so that the guest reaches nothing but one forward, the box's
egress proxy. The guest is configured by its agent from a boot parameter
(docs/protocol.md, "Boot parameters"); every exec gets proxy variables.
"""

from __future__ import annotations

MODES = ("user", "none")
DEFAULT_MODE = "user"

NETWORK = "10.0.2.0/24"  # QEMU's user-mode network (its defaults, written out)
GATEWAY = "10.0.2.2"  # the user-mode stack itself; restrict=on: it forwards nothing
GUEST = "10.0.2.15/24"
IFACE = "eth0"
PROXY_ADDR = "10.0.2.100"  # the one forward (guestfwd) out of the box
PROXY_PORT = 3128
PROXY_URL = f"http://{PROXY_ADDR}:{PROXY_PORT}"
NO_PROXY = "localhost,127.0.0.1"


def boot_parameter() -> str:
    """The kernel argument the agent configures the interface from."""
    return f"microbox.net={IFACE},{GUEST},{GATEWAY}"


def exec_env(mode: str) -> dict[str, str]:
    """Defaults for every exec in a box of `mode` (the box's -e and exec's -e win)."""
    if mode != "user":
        return {}
    return {"http_proxy": PROXY_URL, "https_proxy": PROXY_URL, "HTTP_PROXY": PROXY_URL,
            "HTTPS_PROXY": PROXY_URL, "no_proxy": NO_PROXY, "NO_PROXY": NO_PROXY}
