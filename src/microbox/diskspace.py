"""How much room the filesystem holding a path has, and what kind it is.

The kind matters for tmpfs: its pages are RAM, and a read fault on a hole of a
tmpfs file mapped into a VMM allocates one, so saving a box whose RAM is
mapped from a sparse tmpfs file fills that tmpfs (and the VMM dies of SIGBUS
when it is full). statvfs cannot tell tmpfs apart; /proc/self/mountinfo can.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
NEARLY_FULL = 8 * MIB  # less free than this, and a failed write is taken to be ENOSPC
_MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class Fs:
    """The filesystem holding a path."""

    dev: int
    mount: str  # its mount point
    type: str  # ext4, tmpfs, overlay... ("unknown" if /proc does not say)
    free: int  # bytes an unprivileged writer can still take

    @property
    def nearly_full(self) -> bool:
        return self.free < NEARLY_FULL

    def __str__(self) -> str:
        return f"the {self.type} at {self.mount}"


def existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def of(path: Path) -> Fs:
    """The filesystem that holds `path` (or would, once made)."""
    here = existing(path)
    st = os.statvfs(here)
    mount, kind = _mount_of(os.path.realpath(here))
    return Fs(os.stat(here).st_dev, mount, kind, st.f_bavail * st.f_frsize)


def mib(n: int) -> int:
    """Bytes in whole MiB, rounded up (a need is never shown smaller than it is)."""
    return -(-n // MIB)


def _mount_of(real: str) -> tuple[str, str]:
    """(mount point, filesystem type) of the mount holding the resolved path
    `real`: the longest mount point above it; the last mounted wins a tie."""
    best, kind = "/", "unknown"
    try:
        with open(_MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return best, kind
    for line in lines:
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        mount = _unescape(fields[4])
        fstype = fields[fields.index("-", 6) + 1]
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, fstype
    return best, kind


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field
