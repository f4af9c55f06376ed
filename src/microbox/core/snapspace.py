"""Room for a snapshot (core/snapshots.py).

A snapshot that its filesystems cannot hold is refused before the box is
stopped, with nothing made. At its peak the snapshots dir holds the migration
stream (at most the box's RAM: zero pages take no room in it), the `mem` file
split out of it (at most the RAM again) and a copy of the disk overlay. And a
box restored from a template or a snapshot maps its RAM from that sparse `mem`
file: saving the box reads every page, and on tmpfs each read of a hole takes
a page of the tmpfs (when none is left, the VMM dies of SIGBUS), so there the
holes count too.

A save that fails anyway (the estimate is checked against free space that
other writers share) on a filesystem left (nearly) full is said to have run
out of space.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from microbox import diskspace, paths
from microbox.core import templates
from microbox.core.boxdir import BoxDir
from microbox.diskspace import MIB, Fs
from microbox.errors import DiskFull, VMError
from microbox.store.boxes import BoxRecord

MARGIN = 16 * MIB  # the device state, meta.json and what the overlay copy may add


def check(record: BoxRecord, box: BoxDir, root: Path) -> None:
    """Refuse (DiskFull) a snapshot of `record` into `root` that cannot fit."""
    ram = record.spec.memory_mib * MIB
    need: dict[int, tuple[Fs, int]] = {}

    def add(fs: Fs, n: int) -> None:
        need[fs.dev] = (fs, need.get(fs.dev, (fs, 0))[1] + n)

    add(diskspace.of(root), 2 * ram + _allocated(box.disk) + MARGIN)
    mem = _ram_file(record, box)
    if mem is not None:
        fs = diskspace.of(mem)
        if fs.type == "tmpfs":
            add(fs, max(0, ram - _allocated(mem)))
    for fs, n in need.values():
        if n > fs.free:
            raise DiskFull(f"a snapshot of box '{record.name}' needs up to "
                           f"{diskspace.mib(n)} MiB on {fs}, which has "
                           f"{fs.free // MIB} MiB free, so it was not taken")


def out_of_space(record: BoxRecord, root: Path, exc: BaseException) -> DiskFull | None:
    """What to say of a save into `root` that failed with `exc`, if the cause
    was a full filesystem (None if it was not)."""
    fs = diskspace.of(root)
    enospc = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    if enospc or (isinstance(exc, VMError) and fs.nearly_full):
        return DiskFull(f"saving box '{record.name}' ran out of space on {fs} "
                        f"({fs.free // MIB} MiB free), so no snapshot was made")
    return None


def _allocated(path: Path) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


def _ram_file(record: BoxRecord, box: BoxDir) -> Path | None:
    """The `mem` file the box's VMM maps its RAM from, if any: a box restored
    from a template or snapshot, until it boots cold (its VMM's maps tell)."""
    backing = templates.used_by(box)
    if backing is None:
        return None
    mem = paths.home() / backing / "mem"
    try:
        maps = Path(f"/proc/{record.pid}/maps").read_text() if record.pid else ""
    except OSError:
        maps = ""
    if not maps:
        return mem  # cannot tell: count it
    return mem if os.path.realpath(mem) in maps else None
