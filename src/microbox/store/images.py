"""Image rows: which name points at which content-addressed ext4 file."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from microbox import paths
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


def _from_row(row: sqlite3.Row) -> Image:
    return Image(row["name"], row["digest"], row["size"], row["source"], row["created_at"])


def upsert(db: Database, image: Image) -> None:
    with db.tx() as c:
        c.execute(
            "INSERT INTO images (name, digest, size, source, created_at) VALUES (?,?,?,?,?)"
            " ON CONFLICT(name) DO UPDATE SET digest=excluded.digest, size=excluded.size,"
            " source=excluded.source, created_at=excluded.created_at",
            (image.name, image.digest, image.size, image.source, image.created_at),
        )


def get(db: Database, name: str) -> Image | None:
    row = db.conn.execute("SELECT * FROM images WHERE name=?", (name,)).fetchone()
    return None if row is None else _from_row(row)


def all_images(db: Database) -> list[Image]:
    return [_from_row(r) for r in db.conn.execute("SELECT * FROM images ORDER BY name")]
