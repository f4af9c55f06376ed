"""What a box mounts (`-v SOURCE:TARGET[:ro]`, Docker's syntax): a host
folder (SOURCE an absolute path) or a named volume (SOURCE a name), checked
before anything is made.

A host folder is a virtio-9p export of the VM (QEMU's `local` backend,
`security_model=mapped-xattr`; read-only enforced by QEMU with `readonly=on`);
a volume is an ext4 disk of its own (docs/mounts.md).
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from microbox.errors import InvalidSpec

# Docker's rule for volume names
VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}")
# Guest paths a mount may not cover: the agent's own mounts, and the root
RESERVED = ("/", "/proc", "/sys", "/dev", "/run", "/tmp")
MAX_MOUNTS = 8


@dataclass(frozen=True)
class Mount:
    source: str  # an absolute host path, or a volume's name
    target: str  # an absolute path in the box
    read_only: bool = False

    @property
    def kind(self) -> str:
        """"bind" (a host folder) or "volume"."""
        return "bind" if self.source.startswith("/") else "volume"

    def __str__(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")

    def to_json(self) -> dict[str, Any]:
        return {"type": self.kind, "source": self.source, "target": self.target,
                "read_only": self.read_only}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Mount:
        return cls(str(data["source"]), str(data["target"]), bool(data.get("read_only")))


def parse(text: str) -> Mount:
    """`-v SOURCE:TARGET[:ro|rw]`."""
    parts = text.split(":")
    mode = "rw"
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        mode = parts.pop()
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise InvalidSpec(f"bad -v {text!r}; use -v HOST_DIR:GUEST_DIR[:ro] or "
                          "-v VOLUME:GUEST_DIR[:ro]")
    return Mount(parts[0], parts[1], mode == "ro")


def parse_all(texts: list[str] | tuple[str, ...]) -> tuple[Mount, ...]:
    return tuple(parse(t) for t in texts)


def check(mounts: tuple[Mount, ...]) -> None:
    """Docker's rules, and the box's: absolute targets outside the agent's own
    mounts, one mount a target, host folders that exist (nothing is created),
    volume names as Docker takes them."""
    if len(mounts) > MAX_MOUNTS:
        raise InvalidSpec(f"a box takes at most {MAX_MOUNTS} mounts (-v), not {len(mounts)}")
    seen: set[str] = set()
    for m in mounts:
        target = posixpath.normpath(m.target)
        if not m.target.startswith("/") or "\0" in m.target:
            raise InvalidSpec(f"-v {m}: the path in the box must be absolute")
        if target in RESERVED or any(target.startswith(r + "/") for r in RESERVED[1:]):
            raise InvalidSpec(f"-v {m}: {target} is the box's own; mount somewhere else, "
                              "such as /mnt or /data")
        if target in seen:
            raise InvalidSpec(f"-v {m}: {target} is mounted twice; give each mount its own path")
        seen.add(target)
        if m.kind == "bind":
            _check_folder(m)
        elif m.source.startswith((".", "~")) or "/" in m.source:
            raise InvalidSpec(f"-v {m}: a host folder must be an absolute path; use "
                              f"-v \"$PWD/{m.source.removeprefix('./')}\":{m.target}")
        elif not VOLUME_NAME.fullmatch(m.source):
            raise InvalidSpec(f"-v {m}: bad volume name {m.source!r}; use letters, digits, "
                              "'_', '.' or '-'")


def _check_folder(m: Mount) -> None:
    if "\0" in m.source or "," in m.source:
        raise InvalidSpec(f"-v {m}: the host path may not hold a comma")
    if not os.path.isdir(m.source):
        what = "is not a directory" if os.path.exists(m.source) else "does not exist"
        raise InvalidSpec(f"-v {m}: the host folder {m.source} {what}; create it first "
                          "(microbox creates nothing on the host)")


def normalized(mounts: tuple[Mount, ...]) -> tuple[Mount, ...]:
    """Targets normalized and host folders resolved (symlinks followed once,
    here: QEMU then exports that directory and nothing outside it)."""
    return tuple(Mount(os.path.realpath(m.source) if m.kind == "bind" else m.source,
                       posixpath.normpath(m.target), m.read_only) for m in mounts)
