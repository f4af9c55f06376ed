"""A box's disk (a qcow2 overlay and its backing chain) made an image: what
`microbox commit` and the last step of `microbox build` end in.

The chain is flattened to a raw file (`qemu-img convert`, holes kept), its
file system checked and made clean (`e2fsck -fy`: the disk was cut from a
mounted file system, so its journal may need replaying), given back the room
an image gets (mkfs.FREE_BYTES beyond its contents, `resize2fs`), and moved
into the store. All of it happens in a staging dir: a failure leaves nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import subprocess
from pathlib import Path

from microbox.errors import BuildError, HostError
from microbox.images import filestore, mkfs, pack
from microbox.images.config import ImageConfig
from microbox.images.progress import QUIET, Progress
from microbox.store.db import Database
from microbox.store.images import Image

BLOCK = 4096
CHUNK = 1 << 20


def _run(argv: list[str], what: str, ok: tuple[int, ...] = (0,)) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        raise HostError(f"{argv[0]} is missing",
                        "apt-get install -y qemu-utils e2fsprogs") from None
    if done.returncode not in ok:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise BuildError(f"{what} failed: {tail or f'exit {done.returncode}'}")
    return done.stdout


def _free_blocks(raw: Path) -> tuple[int, int]:
    """(block count, free blocks) of the ext4 file system in `raw`."""
    head = _run(["dumpe2fs", "-h", str(raw)], "reading the file system")
    count = re.search(r"^Block count:\s+(\d+)", head, re.M)
    free = re.search(r"^Free blocks:\s+(\d+)", head, re.M)
    if not count or not free:
        raise BuildError("the disk holds no ext4 file system microbox can read")
    return int(count.group(1)), int(free.group(1))


def make_clean(raw: Path) -> None:
    """Replay the journal and check the file system; then give it mkfs.FREE_BYTES
    of free room (an image's boxes write into that room)."""
    # 0: clean, 1: errors fixed (a replayed journal counts): both leave a good fs
    _run(["e2fsck", "-fy", str(raw)], "checking the file system", ok=(0, 1))
    count, free = _free_blocks(raw)
    want = mkfs.FREE_BYTES // BLOCK
    if free < want:
        blocks = count + want - free
        with open(raw, "r+b") as f:
            f.truncate(blocks * BLOCK)
        _run(["resize2fs", str(raw), f"{blocks * BLOCK // 1024}K"], "growing the file system")


def store(db: Database, name: str, disk: Path, disk_format: str, *, digest: str,
          config: ImageConfig, source: str, progress: Progress = QUIET) -> Image:
    """Flatten `disk` into the store as the image `name` under `digest`, the
    caller's name for what the disk holds (a build's layer key): a file made
    already is only named again."""
    if filestore.blob_path(digest).exists():
        return filestore.add(db, name, None, source, digest=digest, config=config)
    with filestore.staging() as tmp:
        raw = tmp / "image.ext4"
        progress.step("flattening the disk into an image")
        pack.flatten_disk(disk, disk_format, raw)
        return store_raw(db, name, raw, digest=digest, config=config, source=source,
                         progress=progress)


def sparse_digest(raw: Path) -> str:
    """sha256 of the file's size and its data runs (offsets and bytes): the
    holes of a 1.4 GB image holding 270 MB are never read."""
    h = hashlib.sha256()
    fd = os.open(raw, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        h.update(struct.pack(">Q", size))
        for start, end in pack.data_runs(fd, size):
            h.update(struct.pack(">QQ", start, end))
            off = start
            while off < end:
                chunk = os.pread(fd, min(CHUNK, end - off), off)
                if not chunk:
                    break
                h.update(chunk)
                off += len(chunk)
    finally:
        os.close(fd)
    return "sha256-" + h.hexdigest()


def store_raw(db: Database, name: str, raw: Path, *, digest: str | None,
              config: ImageConfig, source: str, progress: Progress = QUIET) -> Image:
    """Check and grow the flattened file `raw` (in a staging dir) and move it
    into the store as `name`, under `digest` or else sparse_digest()."""
    progress.step("checking its file system")
    make_clean(raw)
    return filestore.add(db, name, raw, source, digest=digest or sparse_digest(raw),
                         config=config)
