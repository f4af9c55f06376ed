"""The egress policy of a networked box (docs/net.md): the flags that make it,
checked before anything is created, and the effective policy the host writes
into the box dir for the box's shim, which decides every connection (--net
user) or every name (--net tap, whose firewall chain decides addresses)
against it.

By default a box reaches public addresses only. Refused: loopback, the
host's own addresses, private ranges (RFC 1918, 100.64/10, fc00::/7),
link-local (169.254/16, fe80::/10: cloud metadata), 0.0.0.0/8, multicast and
reserved space. `--allow-private` lifts the loopback, host and private
blocks, never the metadata address; `--allow-cidr` beats every block;
`--allow-host` or `--deny-all` refuse every name not allowed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from microbox.errors import InvalidSpec
from microbox.net import plan


class Egress(Protocol):
    """What of a box's spec (microbox.spec.BoxSpec) its egress policy is made of."""

    @property
    def net(self) -> str: ...
    @property
    def allow_hosts(self) -> tuple[str, ...]: ...
    @property
    def allow_cidrs(self) -> tuple[str, ...]: ...
    @property
    def deny_all(self) -> bool: ...
    @property
    def allow_private(self) -> bool: ...
    @property
    def add_hosts(self) -> tuple[str, ...]: ...

VERSION = 1  # of the policy file (host/shim/policy.go reads this version only)

# Never lifted by --allow-private (only --allow-cidr naming them).
ALWAYS_BLOCKED = (
    ("169.254.169.254/32", "cloud metadata"),
    ("fd00:ec2::254/128", "cloud metadata"),
    ("0.0.0.0/8", "this-network address (0.0.0.0/8)"),
    ("::/128", "the unspecified address"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
    ("240.0.0.0/4", "reserved address space (240.0.0.0/4)"),
)
# Lifted by --allow-private, with the host's own addresses.
PRIVATE_BLOCKED = (
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("10.0.0.0/8", "a private address (RFC 1918)"),
    ("172.16.0.0/12", "a private address (RFC 1918)"),
    ("192.168.0.0/16", "a private address (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (100.64.0.0/10)"),
    ("169.254.0.0/16", "link-local"),
    ("fe80::/10", "link-local"),
    ("fc00::/7", "a unique local address (fc00::/7)"),
)

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def host_pattern(text: str) -> str:
    """One --allow-host: a name (pypi.org) or every name below one (*.pypi.org)."""
    name = text.strip().lower().rstrip(".")
    if _ip(name) is not None:
        raise InvalidSpec(f"--allow-host {text} is an address; use --allow-cidr {text} instead")
    body = name[2:] if name.startswith("*.") else name
    if len(body) > 253 or not _NAME.fullmatch(body):
        raise InvalidSpec(f"bad --allow-host {text!r}: use a host name such as pypi.org, or "
                          "*.pypi.org for the names below it")
    return name


def cidr(text: str) -> str:
    """One --allow-cidr: an address or a range (host bits are dropped)."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise InvalidSpec(f"bad --allow-cidr {text!r}: use an address or a range such as "
                          "203.0.113.0/24") from None


def added_host(text: str) -> tuple[str, str]:
    """One --add-host NAME:ADDRESS (Docker's flag): the proxy resolves NAME to
    ADDRESS itself, before asking the host's resolver. The address is still
    decided by the policy."""
    name, sep, addr = text.replace("=", ":", 1).partition(":")
    ip = _ip(addr.strip())
    name = name.strip().lower().rstrip(".")
    if not sep or ip is None or not _NAME.fullmatch(name) or len(name) > 253:
        raise InvalidSpec(f"bad --add-host {text!r}: use NAME:ADDRESS, such as "
                          "mirror.internal:10.1.2.3")
    return name, str(ip)


def check(spec: Egress) -> None:
    """Refuse a bad or conflicting network spec (before anything is created)."""
    if spec.net not in plan.MODES:
        raise InvalidSpec(f"--net must be one of {', '.join(plan.MODES)}, not {spec.net!r}")
    if spec.net == "none":
        given = [flag for flag, value in (
            ("--allow-host", spec.allow_hosts), ("--allow-cidr", spec.allow_cidrs),
            ("--deny-all", spec.deny_all), ("--allow-private", spec.allow_private),
            ("--add-host", spec.add_hosts)) if value]
        if given:
            raise InvalidSpec(f"{given[0]} has no effect with --net none; drop it, or use "
                              "--net user")
    for h in spec.allow_hosts:
        host_pattern(h)
    for c in spec.allow_cidrs:
        cidr(c)
    for a in spec.add_hosts:
        added_host(a)


def _blocks(rules: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"cidr": c, "reason": r} for c, r in rules]


def host_allowed(spec: Egress) -> bool:
    """Whether host.microbox.internal reaches the host's loopback: with
    --allow-private, or an --allow-cidr covering 127.0.0.1 (which beats every block)."""
    target = ipaddress.ip_address(plan.HOST_TARGET)
    return spec.allow_private or any(target in ipaddress.ip_network(cidr(c))
                                     for c in spec.allow_cidrs)


def effective(spec: Egress) -> dict[str, Any] | None:
    """What the box's shim (and, for --net tap, its firewall chain) enforces
    (None for --net none): normalized allows, the blocks that apply, and
    --add-host names."""
    if spec.net == "none":
        return None
    hosts: dict[str, list[str]] = {}
    for entry in spec.add_hosts:
        name, addr = added_host(entry)
        hosts.setdefault(name, []).append(addr)
    blocks = list(ALWAYS_BLOCKED) + ([] if spec.allow_private else list(PRIVATE_BLOCKED))
    return {
        "version": VERSION,
        "proxy": plan.PROXY_URL if spec.net == "user" else None,
        "deny_all": spec.deny_all,
        "allow_hosts": sorted({host_pattern(h) for h in spec.allow_hosts}),
        "allow_cidrs": sorted({cidr(c) for c in spec.allow_cidrs}),
        "allow_private": spec.allow_private,
        "block": _blocks(blocks),
        "block_host_addresses": not spec.allow_private,
        "hosts": hosts,
        "host_gateway": {"names": [plan.HOST_NAME], "address": plan.GATEWAY,
                         "target": plan.HOST_TARGET, "allowed": host_allowed(spec)},
    }


def write(path: Path, spec: Egress, upstream: dict[str, str] | None = None) -> Path | None:
    """Write the effective policy to `path` (0600, replaced whole) for the shim,
    with the host's own proxies (`upstream`, net/upstream.py) if any; for --net
    none remove it. Returns the path written, or None."""
    policy = effective(spec)
    if policy is None:
        path.unlink(missing_ok=True)
        return None
    if upstream:
        policy["upstream"] = upstream
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(policy, f, indent=1)
    os.replace(tmp, path)
    return path
