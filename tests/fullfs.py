"""Small real filesystems for tests of a full disk: an ext4 on a loop device
or a tmpfs, mounted (as root) for one test and unmounted after it."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted(where: Path, kind: str, size_mib: int) -> Iterator[Path]:
    """A fresh `kind` ("ext4" or "tmpfs") of `size_mib` MiB mounted on `where`
    (made if missing). Skips the test, saying why, where none can be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    where.mkdir(parents=True, exist_ok=True)
    image = where.parent / f".{where.name}.img"
    if kind == "tmpfs":
        argv = ["mount", "-t", "tmpfs", "-o", f"size={size_mib}M,mode=0700", "tmpfs", str(where)]
    else:
        with open(image, "wb") as f:
            f.truncate(size_mib << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
        argv = ["mount", "-o", "loop", str(image), str(where)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        image.unlink(missing_ok=True)
        pytest.skip(f"cannot mount a {kind} here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        # Lazily: a connection the code under test left open must not keep it mounted.
        subprocess.run(["umount", "-l", str(where)], check=True)
        image.unlink(missing_ok=True)


def fill(directory: Path) -> None:
    """Write into `directory` until its filesystem says ENOSPC (in ever smaller
    writes, so that not a block is left)."""
    with open(directory / "filler", "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    f.write(b"\xff" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        with contextlib.suppress(OSError):
            os.fsync(f.fileno())
