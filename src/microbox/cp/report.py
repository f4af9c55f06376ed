"""What one copy did."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class CopyReport:
    """Counts of one copy. A copy given or giving a raw tar stream (`-`) counts
    only `bytes`."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0  # file contents, or the tar stream's size for `-`
    hardlinks: int = 0  # hard links written as copies of the file they name
    skipped: int = 0  # devices, fifos, sockets and unknown entry types, left out
    started: bool = False  # the box was not running: started for the copy, then stopped

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
