"""What a user asks a box to be, validated before anything is made."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from microbox import mounts as box_mounts
from microbox.errors import InvalidSpec
from microbox.mounts import Mount
from microbox.net import cacerts, plan
from microbox.net import policy as net_policy
from microbox.portmap import PortMap

MIN_MEMORY_MIB = 64
DEFAULT_MEMORY_MIB = 256
# The image of a box, a pool or a template when none is named, for every front end.
DEFAULT_IMAGE = "debian"
# What an attached run runs when neither the caller nor the image names a command.
DEFAULT_CMD = ("/bin/sh",)
ACCELS = ("auto", "kvm", "tcg")
# Docker's rule, capped at a hostname's 63 bytes: the name becomes the guest's hostname.
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
_LABEL = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_./-]{0,127}")
_TUPLES = ("ports", "allow_hosts", "allow_cidrs", "add_hosts", "ca_certs")


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidSpec(f"bad box name {name!r}: use 1 to 63 letters, digits, '_', '.' or "
                          "'-', starting with a letter or digit")
    return name


@dataclass(frozen=True)
class BoxSpec:
    image: str
    cpus: int = 1
    memory_mib: int = DEFAULT_MEMORY_MIB
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    accel: str = "auto"
    kernel: str | None = None  # a user's own vmlinux instead of the built one
    labels: dict[str, str] = field(default_factory=dict)  # the user's own tags, as Docker's
    cold: bool = False  # boot the kernel even when a template could restore the box
    ports: tuple[PortMap, ...] = ()  # published: host ports forwarded into the box
    # Networking (docs/net.md): "user" (egress through the box's filtering proxy)
    # or "none" (no network device), and the egress policy of "user".
    net: str = plan.DEFAULT_MODE
    allow_hosts: tuple[str, ...] = ()  # names (*.x for those below x); others refused
    allow_cidrs: tuple[str, ...] = ()  # addresses or ranges allowed over every block
    deny_all: bool = False  # nothing unless allowed above
    allow_private: bool = False  # lift the loopback, host and private-range blocks
    add_hosts: tuple[str, ...] = ()  # NAME:ADDRESS the proxy resolves itself
    # Host folders and named volumes (-v SOURCE:TARGET[:ro]; docs/mounts.md)
    mounts: tuple[Mount, ...] = ()
    # Trusted CAs (docs/net.md): PEM certificates (a file path given here is read
    # now), and whether the host's own bundle joins them (read at every start).
    ca_certs: tuple[str, ...] = ()
    trust_host_ca: bool = False

    def __post_init__(self) -> None:
        for name in _TUPLES:  # the SDK takes lists; a lone string is one entry
            value = getattr(self, name)
            if not isinstance(value, tuple):
                value = (value,) if isinstance(value, str) else tuple(value)
                object.__setattr__(self, name, value)
        value = self.mounts  # the SDK takes "SOURCE:TARGET[:ro]" strings too
        if isinstance(value, (str, Mount)):
            value = (value,)
        object.__setattr__(self, "mounts", tuple(
            box_mounts.parse(m) if isinstance(m, str) else m for m in value))
        if any(not cacerts.is_pem(c) for c in self.ca_certs):  # paths: read (and checked) now
            object.__setattr__(self, "ca_certs", tuple(
                c if cacerts.is_pem(c) else cacerts.load(str(c)) for c in self.ca_certs))

    def validate(self) -> BoxSpec:
        host_cpus = os.cpu_count() or 1
        if not 1 <= self.cpus <= max(host_cpus, 1) * 4:
            raise InvalidSpec(f"--cpus must be between 1 and {host_cpus * 4}, not {self.cpus}")
        host_mib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1 << 20)
        if not MIN_MEMORY_MIB <= self.memory_mib <= host_mib:
            raise InvalidSpec(f"--memory must be between {MIN_MEMORY_MIB} and {host_mib} MiB, "
                              f"not {self.memory_mib}")
        if self.accel not in ACCELS:
            raise InvalidSpec(f"--accel must be one of {', '.join(ACCELS)}, not {self.accel!r}")
        for key in self.env:
            if not key or "=" in key or "\0" in key:
                raise InvalidSpec(f"bad environment variable name {key!r}; use -e KEY=VALUE")
        for key in self.labels:
            if not _LABEL.fullmatch(key):
                raise InvalidSpec(f"bad label name {key!r}; use --label KEY=VALUE with a key of "
                                  "letters, digits, '.', '-', '_' or '/'")
        if self.workdir is not None and not self.workdir.startswith("/"):
            raise InvalidSpec(f"--workdir must be an absolute path, not {self.workdir!r}")
        if self.kernel is not None and not os.path.isfile(self.kernel):
            raise InvalidSpec(f"--kernel {self.kernel} is not a file")
        net_policy.check(self)
        box_mounts.check(self.mounts)
        for pem in self.ca_certs:
            cacerts.parse(pem, "(PEM text)")
        return self

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ports"] = [p.to_json() for p in self.ports]
        # Left out unless set: the JSON of every other spec (rows, pool ids) stays as it was.
        if self.mounts:
            data["mounts"] = [m.to_json() for m in self.mounts]
        else:
            del data["mounts"]
        if not self.ca_certs:
            del data["ca_certs"]
        if not self.trust_host_ca:
            del data["trust_host_ca"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BoxSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["ports"] = tuple(PortMap.from_json(p) for p in known.get("ports") or ())
        known["mounts"] = tuple(Mount.from_json(m) for m in known.get("mounts") or ())
        # A spec stored before boxes had networking (a row, a snapshot, a pack)
        # had no network device: restoring its state needs the same devices.
        known.setdefault("net", "none")
        return cls(**known)


def parse_labels(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """--label KEY=VALUE (or KEY alone, for an empty value), as Docker does."""
    labels: dict[str, str] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        labels[key] = value
    return labels


def parse_env(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """-e KEY=VALUE (or -e KEY to take it from the caller's environment, as Docker does)."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            if key not in os.environ:
                continue
            value = os.environ[key]
        if not key:
            raise InvalidSpec(f"bad environment variable {pair!r}; use -e KEY=VALUE")
        env[key] = value
    return env
