"""Named volumes: ext4 disks that outlive boxes (`-v NAME:/data`).

    <home>/volumes/<name>/
        disk.ext4   the volume (sparse: its size costs disk only as it fills)
        meta.json   its size and creation time

A volume is made whole in a private dir and renamed into place, so a failed or
killed create leaves no volume (gc removes the dir). `run -v NAME:...` makes a
missing volume, as Docker does. One box at a time mounts a volume read-write;
any number mount it read-only while none has it read-write: a start that would
break this is refused naming the box that holds it (QEMU's own lock on the
disk file is the backstop). A volume some box mounts is not removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from microbox import locks, paths
from microbox.errors import HostError, InvalidSpec, NotFound, Refused, StateError
from microbox.mounts import VOLUME_NAME
from microbox.spec import BoxSpec
from microbox.store import boxes
from microbox.store.db import Database
from microbox.store.status import LIVE, Status

DEFAULT_SIZE = 10 << 30
MIN_SIZE = 16 << 20
BUSY = ".busy"  # flock held in a create's private dir
_SIZE = re.compile(r"(\d+)([kmgt]?)i?b?", re.I)


@dataclass(frozen=True)
class Volume:
    name: str
    size: int
    created_at: float

    @property
    def path(self) -> Path:
        return paths.volumes_dir() / self.name / "disk.ext4"

    @property
    def used_bytes(self) -> int:
        """Disk the sparse file really takes."""
        try:
            return self.path.stat().st_blocks * 512
        except FileNotFoundError:
            return 0

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "created_at": self.created_at,
                "used_bytes": self.used_bytes, "path": str(self.path)}


def parse_size(text: str) -> int:
    """`10G`, `512M`, `1073741824`: bytes."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise InvalidSpec(f"bad size {text!r}; use a number of bytes or 512M, 10G, ...")
    size = int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[m.group(2).lower()]
    if size < MIN_SIZE:
        raise InvalidSpec(f"a volume needs at least {MIN_SIZE >> 20} MiB, not {text}")
    return size


def _valid(name: str) -> str:
    if not VOLUME_NAME.fullmatch(name):
        raise InvalidSpec(f"bad volume name {name!r}; use letters, digits, '_', '.' or '-'")
    return name


def find(name: str) -> Volume | None:
    meta = paths.volumes_dir() / _valid(name) / "meta.json"
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return Volume(name, int(data["size"]), float(data["created_at"]))


def get(name: str) -> Volume:
    found = find(name)
    if found is None:
        raise NotFound(f"no volume named {name!r}", "microbox volume ls")
    return found


def all_volumes() -> list[Volume]:
    root = paths.volumes_dir()
    found = (find(d.name) for d in sorted(root.iterdir()) if not d.name.startswith(".")) \
        if root.is_dir() else iter(())
    return [v for v in found if v is not None]


def create(name: str, size: int = DEFAULT_SIZE) -> Volume:
    """A new, empty ext4 volume; refused if the name is taken."""
    _valid(name)
    if find(name) is not None:
        raise Refused(f"a volume named {name!r} exists already", "microbox volume ls")
    root = paths.volumes_dir()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    busy = locks.acquire(work / BUSY)  # gc sweeps only dirs nobody holds
    try:
        disk = work / "disk.ext4"
        with open(disk, "wb") as f:
            f.truncate(size)
        cmd = ["mke2fs", "-q", "-F", "-t", "ext4", "-m", "0", "-L", name[:16],
               "-E", "lazy_itable_init=1,lazy_journal_init=1", str(disk)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True)
        except FileNotFoundError:
            raise HostError("mke2fs is missing", "apt-get install -y e2fsprogs") from None
        if done.returncode != 0:
            raise HostError(f"mke2fs could not make the volume: {done.stderr.strip()[-300:]}")
        vol = Volume(name, size, time.time())
        (work / "meta.json").write_text(json.dumps({"size": size,
                                                    "created_at": vol.created_at}))
        try:
            os.rename(work, root / name)
        except OSError:  # made meanwhile by another command
            raise Refused(f"a volume named {name!r} exists already",
                          "microbox volume ls") from None
        (root / name / BUSY).unlink()
        return vol
    finally:
        busy.close()
        shutil.rmtree(work, ignore_errors=True)


def ensure(spec: BoxSpec) -> None:
    """Make the spec's missing volumes (with the default size), as `docker run
    -v NAME:...` does."""
    for m in spec.mounts:
        if m.kind == "volume" and find(m.source) is None:
            with contextlib.suppress(Refused):  # made by another command meanwhile
                create(m.source)


def users(db: Database, name: str) -> list[tuple[str, bool, Status]]:
    """(box name, read-only, status) of the boxes that mount the volume."""
    return [(r.name, m.read_only, r.status) for r in boxes.all_boxes(db)
            for m in r.spec.mounts if m.kind == "volume" and m.source == name]


def check_free(db: Database, box_id: str, spec: BoxSpec) -> None:
    """Refuse to start a box whose volumes another live box holds against it."""
    for m in spec.mounts:
        if m.kind != "volume":
            continue
        for r in boxes.all_boxes(db):
            if r.id == box_id or r.status not in (*LIVE, Status.STARTING):
                continue
            for other in r.spec.mounts:
                if other.kind == "volume" and other.source == m.source and \
                        not (m.read_only and other.read_only):
                    mode = "read-only" if other.read_only else "read-write"
                    raise StateError(f"volume {m.source!r} is mounted {mode} by box "
                                     f"'{r.name}'; one box at a time mounts a volume "
                                     "read-write (many may mount it :ro)",
                                     f"microbox stop {r.name}", "once its work is done")


def settle(vol: Volume) -> None:
    """Replay the journal a box killed while it wrote left in the volume, so
    that boxes can mount it read-only (ext4 cannot replay on a read-only disk).
    Called with no box mounting it read-write (check_free); one replay at a
    time (a lock in the volume's dir)."""
    with locks.held(vol.path.parent / "settle.lock"):
        try:
            done = subprocess.run(["e2fsck", "-y", "-E", "journal_only", str(vol.path)],
                                  capture_output=True, text=True)
        except FileNotFoundError:
            raise HostError("e2fsck is missing", "apt-get install -y e2fsprogs") from None
        if done.returncode not in (0, 1):  # 1: the journal was replayed
            raise HostError(f"volume {vol.name!r} needs repair: "
                            f"{(done.stdout + done.stderr).strip()[-300:]}",
                            f"e2fsck -f {vol.path}")


def remove(db: Database, name: str) -> Volume:
    """Remove a volume no box mounts (a stopped box that would mount it counts)."""
    vol = get(name)
    held = users(db, name)
    if held:
        raise StateError(f"volume {name!r} is mounted by box '{held[0][0]}'; remove that "
                         "box first, or keep the volume")
    shutil.rmtree(paths.volumes_dir() / name)
    return vol


def sweep_abandoned(dry_run: bool = False) -> list[str]:
    """gc's part: the private dirs of volume creates that were killed."""
    root = paths.volumes_dir()
    gone = [str(d) for d in root.iterdir() if d.name.startswith(".")
            and not locks.is_held(d / BUSY)] if root.is_dir() else []
    if not dry_run:
        for d in gone:
            shutil.rmtree(d, ignore_errors=True)
    return gone
