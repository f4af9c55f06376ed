"""Content-addressed image store: read-only ext4 files named by their sha256;
the name -> digest rows live in store/images.py."""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import AbstractContextManager
from pathlib import Path

from microbox import locks, paths
from microbox.errors import NotFound
from microbox.store import images as rows
from microbox.store.db import Database
from microbox.store.images import Image as Image
from microbox.store.images import blob_path as blob_path


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


def build_lock(name: str) -> AbstractContextManager[locks.Lock]:
    """Serialize builds of one image name across processes."""
    return locks.held(staging_dir() / f".{name}.lock")


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
    rows.upsert(db, image)
    return image


def find(db: Database, name: str) -> Image | None:
    """The image `name` if its row exists and its file is in the store."""
    image = rows.get(db, name)
    return image if image is not None and image.path.exists() else None


def get(db: Database, name: str) -> Image:
    image = find(db, name)
    if image is None:
        raise NotFound(f"no image named {name!r}", "microbox image list")
    return image


def all_images(db: Database) -> list[Image]:
    return rows.all_images(db)
