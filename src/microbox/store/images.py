"""Image rows: which name points at which content-addressed ext4 file, what the
image runs (its config) and which cached layers it was made of."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from microbox import paths
from microbox.images.config import ImageConfig
from microbox.store.db import Database


@dataclass(frozen=True)
class Image:
    name: str
    digest: str
    size: int
    source: str
    created_at: float
    config: ImageConfig = field(default_factory=ImageConfig)
    layers: tuple[str, ...] = ()  # digests of the OCI layers it was flattened from
    image_id: str | None = None  # the OCI config digest, for pulls

    @property
    def path(self) -> Path:
        return blob_path(self.digest)

    @property
    def disk_bytes(self) -> int:
        """Disk its ext4 file really uses (the file is sparse)."""
        return _allocated(self.path)

    @property
    def layers_bytes(self) -> int:
        """Disk its cached OCI layers use (shared with other images made of them)."""
        return sum(_allocated(layer_path(d)) for d in self.layers)


def _allocated(path: Path) -> int:
    try:
        return path.stat().st_blocks * 512
    except FileNotFoundError:
        return 0


def blob_path(digest: str) -> Path:
    return paths.images_dir() / "blobs" / f"{digest}.ext4"


def layer_path(digest: str) -> Path:
    """An OCI blob (`sha256:<hex>`) in the store's layer cache."""
    algo, _, hexdigest = digest.partition(":")
    return paths.images_dir() / "layers" / algo / hexdigest


def _from_row(row: sqlite3.Row) -> Image:
    return Image(row["name"], row["digest"], row["size"], row["source"], row["created_at"],
                 ImageConfig.from_json(row["config"]), tuple(json.loads(row["layers"])),
                 row["image_id"])


def upsert(db: Database, image: Image) -> None:
    with db.tx() as c:
        c.execute(
            "INSERT INTO images (name, digest, size, source, created_at, config, layers,"
            " image_id) VALUES (?,?,?,?,?,?,?,?)"
            " ON CONFLICT(name) DO UPDATE SET digest=excluded.digest, size=excluded.size,"
            " source=excluded.source, created_at=excluded.created_at,"
            " config=excluded.config, layers=excluded.layers, image_id=excluded.image_id",
            (image.name, image.digest, image.size, image.source, image.created_at,
             image.config.to_json(), json.dumps(list(image.layers)), image.image_id),
        )


def get(db: Database, name: str) -> Image | None:
    row = db.conn.execute("SELECT * FROM images WHERE name=?", (name,)).fetchone()
    return None if row is None else _from_row(row)


def by_image_id(db: Database, image_id: str) -> list[Image]:
    rows = db.conn.execute("SELECT * FROM images WHERE image_id=? ORDER BY created_at DESC",
                           (image_id,)).fetchall()
    return [_from_row(r) for r in rows]


def delete(db: Database, name: str) -> None:
    with db.tx() as c:
        c.execute("DELETE FROM images WHERE name=?", (name,))


def all_images(db: Database) -> list[Image]:
    return [_from_row(r) for r in db.conn.execute("SELECT * FROM images ORDER BY name")]
