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
    # a host folder the box caches (Docker's `:cached`): metadata and data are
    # kept in the box, so tree walks run several times faster, but the box may
    # see changes the host makes late (docs/mounts.md)
    cached: bool = False

    @property
    def kind(self) -> str:
        """"bind" (a host folder) or "volume"."""
        return "bind" if self.source.startswith("/") else "volume"

    def __str__(self) -> str:
        opts = ",".join(o for o, on in (("ro", self.read_only), ("cached", self.cached)) if on)
        return f"{self.source}:{self.target}" + (f":{opts}" if opts else "")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.kind, "source": self.source,
                                "target": self.target, "read_only": self.read_only}
        if self.cached:
            data["cached"] = True
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Mount:
        return cls(str(data["source"]), str(data["target"]), bool(data.get("read_only")),
                   bool(data.get("cached")))


# Docker's -v options: ro/rw, and the consistency of a host folder
# (consistent: the default; cached and delegated: the box may lag the host)
OPTIONS = {"ro": ("read_only", True), "rw": ("read_only", False),
           "consistent": ("cached", False), "cached": ("cached", True),
           "delegated": ("cached", True)}


def parse(text: str) -> Mount:
    """`-v SOURCE:TARGET[:OPTIONS]`, OPTIONS comma-separated: ro, rw, cached,
    delegated, consistent."""
    parts = text.split(":")
    chosen: dict[str, bool] = {}
    if len(parts) == 3:
        for opt in parts.pop().split(","):
            if opt not in OPTIONS:
                raise InvalidSpec(f"bad -v option {opt!r} in {text!r}; use ro, rw, cached, "
                                  "delegated or consistent")
            field, value = OPTIONS[opt]
            chosen[field] = value
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise InvalidSpec(f"bad -v {text!r}; use -v HOST_DIR:GUEST_DIR[:ro] or "
                          "-v VOLUME:GUEST_DIR[:ro]")
    return Mount(parts[0], parts[1], **chosen)


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
        elif m.cached:
            raise InvalidSpec(f"-v {m}: cached is for host folders; a volume is the box's "
                              "own disk already")
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

