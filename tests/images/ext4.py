"""Look inside an image's ext4 file with debugfs (read-only, no mount, no root)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    mode: int
    uid: int
    gid: int
    size: int


def ls(image: Path, directory: str) -> dict[str, Entry]:
    out = subprocess.run(["debugfs", "-R", f"ls -l {directory}", str(image)],
                         capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s*\d+\s+(\d+)\s+\(\d+\)\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+\s+\S+\s+(.+)$",
                     line)
        if m and m.group(5) not in (".", ".."):
            found[m.group(5)] = Entry(int(m.group(1), 8), int(m.group(2)), int(m.group(3)),
                                      int(m.group(4)))
    return found


def cat(image: Path, path: str) -> bytes:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(image)],
                          capture_output=True, check=True).stdout


def xattrs(image: Path, path: str) -> str:
    return subprocess.run(["debugfs", "-R", f"ea_list {path}", str(image)],
                          capture_output=True, text=True, check=True).stdout


def clean(image: Path) -> bool:
    return subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True).returncode == 0
