"""Content-addressed image store: read-only ext4 files named by their sha256,
and a name -> digest table in the database."""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from microbox import paths
from microbox.errors import NotFound
from microbox.store.db import Database


@dataclass(frozen=True)
class Image:
    name: str
    digest: str
    size: int
    source: str
    created_at: float

    @property
    def path(self) -> Path:
        return blob_path(self.digest)


def blob_path(digest: str) -> Path:
    return paths.images_dir() / "blobs" / f"{digest}.ext4"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256-" + h.hexdigest()


def staging_dir() -> Path:
    """Where builders write an image before it is added (same filesystem as the store)."""
    d = paths.images_dir() / "tmp"
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return d


@contextmanager
def build_lock(name: str) -> Iterator[None]:
    """Serialize builds of one image name across processes."""
    fd = os.open(staging_dir() / f".{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def add(db: Database, name: str, built: Path, source: str) -> Image:
    """Move a freshly built ext4 file into the store under `name`."""
    digest = _digest(built)
    dest = blob_path(digest)
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if dest.exists():
        built.unlink()
    else:
        os.chmod(built, 0o444)
        os.replace(built, dest)
    image = Image(name, digest, dest.stat().st_size, source, time.time())
    with db.tx() as c:
        c.execute(
            "INSERT INTO images (name, digest, size, source, created_at) VALUES (?,?,?,?,?)"
            " ON CONFLICT(name) DO UPDATE SET digest=excluded.digest, size=excluded.size,"
            " source=excluded.source, created_at=excluded.created_at",
            (image.name, image.digest, image.size, image.source, image.created_at),
        )
    return image


def _row(row: sqlite3.Row) -> Image:
    return Image(row["name"], row["digest"], row["size"], row["source"], row["created_at"])


def find(db: Database, name: str) -> Image | None:
    row = db.conn.execute("SELECT * FROM images WHERE name=?", (name,)).fetchone()
    if row is None:
        return None
    image = _row(row)
    return image if image.path.exists() else None


def get(db: Database, name: str) -> Image:
    image = find(db, name)
    if image is None:
        raise NotFound(f"no image named {name!r}", "microbox image list")
    return image


def all_images(db: Database) -> list[Image]:
    return [_row(r) for r in db.conn.execute("SELECT * FROM images ORDER BY name")]
