"""A newc cpio archive writer, enough for the agent's initramfs.

Uncompressed on purpose: under emulation, decompressing costs more boot time
than reading a few more megabytes.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    name: str
    mode: int  # including the file type bits
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def _header(ino: int, e: Entry, nlink: int, size: int) -> bytes:
    fields = [ino, e.mode, 0, 0, nlink, 0, size, 0, 0, e.rdev[0], e.rdev[1],
              len(e.name) + 1, 0]
    return b"070701" + b"".join(f"{v:08x}".encode() for v in fields)


def archive(entries: list[Entry]) -> bytes:
    out = bytearray()
    for ino, e in enumerate([*entries, Entry("TRAILER!!!", 0)], start=1):
        is_dir = stat.S_ISDIR(e.mode)
        head = _header(ino if e.name != "TRAILER!!!" else 0, e, 2 if is_dir else 1, len(e.data))
        name = e.name.encode() + b"\0"
        out += head + name
        out += _pad(len(head) + len(name))
        out += e.data + _pad(len(e.data))
    return bytes(out)


def agent_initramfs(agent: Path, dest: Path) -> None:
    """Write the initramfs: /init is the agent, plus the directories it mounts on."""
    entries = [
        Entry("dev", stat.S_IFDIR | 0o755),
        Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        Entry("proc", stat.S_IFDIR | 0o755),
        Entry("sys", stat.S_IFDIR | 0o755),
        Entry("newroot", stat.S_IFDIR | 0o755),
        Entry("init", stat.S_IFREG | 0o755, agent.read_bytes()),
    ]
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(archive(entries))
    os.replace(tmp, dest)
