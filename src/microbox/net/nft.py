"""microbox's one nftables table (`table inet microbox`) for `--net tap` boxes
(docs/net.md, "--net tap"). The host enforces each box's egress policy here,
keyed by the box's host-side veth, so nothing a guest does inside its own
machine or namespace changes what it may reach.

    table inet microbox
      map boxes         the box's veth name -> jump b<ID> (one element per box)
      chain forward     established: accept; box to box: drop; into a box: drop;
                        from a box: its chain (by the map)
      chain input       established: accept; from a box: its chain (the host's
                        own addresses are refused there unless allowed)
      chain postrouting the boxes' link addresses masqueraded on the way out
      chain b<ID>       the box's policy: --allow-cidr, the blocks, the names
                        its resolver allowed, the default
      chain b<ID>_refuse  counts the refusal by destination, then rejects
      set b<ID>_allow / _block / _names / _refused

Every change is one `nft -f -` transaction, written from values this module
made or validated (hex box ids, normalized CIDRs); reads are `nft -j`.
The table exists while some tap box does: the last box's removal drops it.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from microbox.errors import HostError

TABLE = "microbox"
LINK_PREFIX = "mbx"  # every box's host-side veth: mbx + 12 hex digits of its id


def binary() -> str:
    found = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if found is None:
        raise HostError("nftables is not installed (--net tap needs it)",
                        "apt-get install -y nftables")
    return found


def run(script: str) -> None:
    """Apply `script` as one transaction: all of it or none."""
    done = subprocess.run([binary(), "-f", "-"], input=script, capture_output=True, text=True)
    if done.returncode != 0:
        raise HostError(f"nftables refused microbox's rules: {done.stderr.strip()[:300]}")


def read(*what: str) -> list[dict[str, Any]]:
    """`nft -j list ...` as its list of objects; [] when the object does not exist."""
    done = subprocess.run([binary(), "-j", "list", *what], capture_output=True, text=True)
    if done.returncode != 0:
        return []
    items: list[dict[str, Any]] = json.loads(done.stdout).get("nftables", [])
    return items


def chain_of(box_id: str) -> str:
    return f"b{box_id[:12]}"


def link_of(box_id: str) -> str:
    return f"{LINK_PREFIX}{box_id[:12]}"


def names_set(box_id: str) -> str:
    """The set the box's resolver fills with the addresses of allowed names."""
    return f"{chain_of(box_id)}_names"


def _base(pool: str) -> str:
    return f"""
add table inet {TABLE}
add map inet {TABLE} boxes {{ type ifname : verdict; }}
add chain inet {TABLE} forward {{ type filter hook forward priority filter; policy accept; }}
add rule inet {TABLE} forward ct state established,related accept
add rule inet {TABLE} forward iifname "{LINK_PREFIX}*" oifname "{LINK_PREFIX}*" drop
add rule inet {TABLE} forward oifname "{LINK_PREFIX}*" drop
add rule inet {TABLE} forward iifname vmap @boxes
add chain inet {TABLE} input {{ type filter hook input priority filter; policy accept; }}
add rule inet {TABLE} input ct state established,related accept
add rule inet {TABLE} input iifname vmap @boxes
add chain inet {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}
add rule inet {TABLE} postrouting ip saddr {pool} oifname != "{LINK_PREFIX}*" masquerade
"""


@dataclass(frozen=True)
class Rules:
    """What one box's chain enforces, from its effective policy (IPv4: a tap
    box has no IPv6 route, and any IPv6 it sends is refused)."""

    allow: tuple[str, ...]  # --allow-cidr: beats every block
    block: tuple[str, ...]  # the blocks that apply (docs/net.md, "The policy")
    block_host: bool  # the host's own addresses (not --allow-private)
    restricted: bool  # names are restricted: only the resolver's answers pass

    @classmethod
    def of(cls, policy: dict[str, Any]) -> Rules:
        def v4(cidrs: list[str]) -> tuple[str, ...]:
            nets = [ipaddress.ip_network(c) for c in cidrs]
            return tuple(str(n) for n in ipaddress.collapse_addresses(
                n for n in nets if isinstance(n, ipaddress.IPv4Network)))
        return cls(allow=v4(policy["allow_cidrs"]), block=v4([b["cidr"] for b in policy["block"]]),
                   block_host=bool(policy["block_host_addresses"]),
                   restricted=bool(policy["allow_hosts"]) or bool(policy["deny_all"]))


def _box(box_id: str, rules: Rules) -> str:
    c, t = chain_of(box_id), f"inet {TABLE}"
    lines = [
        f"add set {t} {c}_allow {{ type ipv4_addr; flags interval; }}",
        f"add set {t} {c}_block {{ type ipv4_addr; flags interval; }}",
        f"add set {t} {c}_names {{ type ipv4_addr; size 65536; }}",
        f"add set {t} {c}_refused {{ type ipv4_addr . inet_proto . inet_service; "
        "flags dynamic; counter; size 4096; }",
        f"add chain {t} {c}_refuse",
        f"add rule {t} {c}_refuse meta l4proto {{ tcp, udp }} "
        f"update @{c}_refused {{ ip daddr . meta l4proto . th dport }}",
        f"add rule {t} {c}_refuse counter",
        f"add rule {t} {c}_refuse meta l4proto tcp reject with tcp reset",
        f"add rule {t} {c}_refuse reject with icmpx admin-prohibited",
        f"add chain {t} {c}",
        f"add rule {t} {c} meta nfproto ipv6 goto {c}_refuse",
        f"add rule {t} {c} ip daddr @{c}_allow accept",
    ]
    if rules.allow:
        lines.append(f"add element {t} {c}_allow {{ {', '.join(rules.allow)} }}")
    if rules.block:
        lines.append(f"add element {t} {c}_block {{ {', '.join(rules.block)} }}")
    if rules.block_host:
        lines.append(f"add rule {t} {c} fib daddr type local goto {c}_refuse")
    lines.append(f"add rule {t} {c} ip daddr @{c}_block goto {c}_refuse")
    if rules.restricted:
        lines.append(f"add rule {t} {c} ip daddr @{c}_names accept")
        lines.append(f"add rule {t} {c} goto {c}_refuse")
    lines.append(f"add rule {t} {c} accept")
    lines.append(f'add element {t} boxes {{ "{link_of(box_id)}" : jump {c} }}')
    return "\n".join(lines) + "\n"


def script_add(box_id: str, rules: Rules, pool: str, table_exists: bool) -> str:
    """The transaction that adds a box (and the table, the first time)."""
    return ("" if table_exists else _base(pool)) + _box(box_id, rules)


def script_remove(box_id: str, boxes_left: int) -> str:
    """The transaction that removes a box (and the table, with the last one)."""
    if boxes_left == 0:
        return f"delete table inet {TABLE}\n"
    c, t = chain_of(box_id), f"inet {TABLE}"
    return "\n".join([
        f'delete element {t} boxes {{ "{link_of(box_id)}" }}',
        f"delete chain {t} {c}", f"delete chain {t} {c}_refuse",
        *(f"delete set {t} {c}_{s}" for s in ("allow", "block", "names", "refused")),
    ]) + "\n"


def _state() -> tuple[bool, set[str]]:
    """Whether the table exists, and the 12-digit ids of the boxes it holds."""
    items = read("table", "inet", TABLE)
    found = {name[1:] for item in items
             if (name := item.get("chain", {}).get("name", "")).startswith("b") and len(name) == 13}
    return bool(items), found


def boxes() -> set[str]:
    """The 12-digit ids of the boxes the table holds (their chains)."""
    return _state()[1]


def add(box_id: str, rules: Rules, pool: str) -> None:
    """Add a box's chain and sets (the table too, with the first box), replacing
    a leftover of the same box, in one transaction."""
    exists, present = _state()
    before = ""
    if box_id[:12] in present:  # a leftover of this very box
        before = script_remove(box_id, len(present) - 1)
        exists = len(present) > 1
    run(before + script_add(box_id, rules, pool, table_exists=exists))


def remove(box_id: str) -> None:
    """Remove a box's chain and sets (the table too, with the last box). Idempotent."""
    exists, present = _state()
    if box_id[:12] in present:
        run(script_remove(box_id, len(present) - 1))
    elif exists and not present:
        run(f"delete table inet {TABLE}\n")


@dataclass(frozen=True)
class Refused:
    """Connections of one box refused by its firewall, by destination."""

    addr: str
    proto: str
    port: int
    packets: int  # a rejected TCP connection sends one SYN: one packet

    def __str__(self) -> str:
        return f"firewall refused {self.packets}x {self.proto} {self.addr}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        return {"addr": self.addr, "proto": self.proto, "port": self.port,
                "packets": self.packets}


def refused(box_id: str) -> list[Refused]:
    out: list[Refused] = []
    for item in read("set", "inet", TABLE, f"{chain_of(box_id)}_refused"):
        for elem in item.get("set", {}).get("elem", []):
            e = elem.get("elem", elem)
            key = e.get("val", {}).get("concat", []) if isinstance(e, dict) else []
            if len(key) != 3:
                continue
            packets = int(e.get("counter", {}).get("packets", 0))
            out.append(Refused(str(key[0]), str(key[1]), int(key[2]), packets))
    return sorted(out, key=lambda r: (-r.packets, r.addr, r.port))
