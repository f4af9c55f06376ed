"""A host tree as data, for tests that check a copy created nothing outside its destination."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def snapshot(root: Path, skip: str = "") -> dict[str, tuple[int, bytes]]:
    """Every path under root but `skip` (symlinks not followed): its mode and content."""
    seen: dict[str, tuple[int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and skip in dirnames:
            dirnames.remove(skip)
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            st = p.lstat()
            content = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
            seen[str(p.relative_to(root))] = (st.st_mode, content)
    return seen
