"""Reading a box's network log: one line per connection its shim refused,
numbered (host/shim/netlog.go). The shim moves a full log to `net.log.1`."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

_NUMBER = re.compile(rb" refused #(\d+) ")


def read(path: Path) -> bytes:
    """The log, the older file first (empty if the box never refused anything)."""
    data = b""
    for p in (path.with_name(path.name + ".1"), path):
        with contextlib.suppress(OSError):
            data += p.read_bytes()
    return data


def refused(path: Path) -> int:
    """How many connections the box's shim has refused (the last line's number)."""
    for line in reversed(read(path).splitlines()):
        m = _NUMBER.search(line)
        if m:
            return int(m.group(1))
    return 0
