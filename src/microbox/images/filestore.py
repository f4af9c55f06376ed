"""Content-addressed image store: read-only ext4 files named by their sha256,
and the cache of OCI layer blobs they were made from (shared between images).

    <home>/images/
        blobs/sha256-<hex>.ext4   one per distinct tree, mode 0444
        layers/sha256/<hex>       OCI blobs (layers, configs, manifests), skopeo's shared dir
        tmp/                      work in progress; only renames leave it
        store.lock                shared by builders and box creates, exclusive for rm/prune

The name -> digest rows live in store/images.py. A blob is unlinked only when no
row and no box refers to it: a box's qcow2 overlay is backed by the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

from microbox import locks, paths
from microbox.errors import NotFound, Refused
from microbox.images.config import ImageConfig
from microbox.store import boxes
from microbox.store import images as rows
from microbox.store.db import Database
from microbox.store.images import Image as Image
from microbox.store.images import blob_path as blob_path
from microbox.store.images import layer_path as layer_path


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


def layers_dir() -> Path:
    """skopeo's shared blob dir: OCI blobs by digest, written by rename, never half."""
    d = paths.images_dir() / "layers"
    (d / "sha256").mkdir(mode=0o700, parents=True, exist_ok=True)
    return d


def using() -> AbstractContextManager[locks.Lock]:
    """Held (shared) while adding to the store or making a box of an image."""
    d = paths.images_dir()
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return locks.held(d / "store.lock", shared=True)


def _exclusive() -> AbstractContextManager[locks.Lock]:
    d = paths.images_dir()
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return locks.held(d / "store.lock")


BUSY = ".busy"  # flock held in a staging dir by the process working in it


def _sweep_abandoned(dry_run: bool = False) -> list[str]:
    """Remove staging dirs whose process died (a killed pull or build); the
    caller holds the sweep lock."""
    gone = []
    for d in staging_dir().iterdir():
        if d.is_dir() and not locks.is_held(d / BUSY):
            gone.append(str(d))
            if not dry_run:
                shutil.rmtree(d, ignore_errors=True)
    return gone


def sweep_abandoned(dry_run: bool = False) -> list[str]:
    """gc's part: the work of pulls and builds that were killed (their staging dirs)."""
    if not (paths.images_dir() / "tmp").is_dir():
        return []
    with locks.held(staging_dir() / ".sweep.lock"):
        return _sweep_abandoned(dry_run)


@contextlib.contextmanager
def staging() -> Iterator[Path]:
    """A private scratch dir under the store, removed on every path out (and by the
    next staging() if this process is killed)."""
    with using():
        with locks.held(staging_dir() / ".sweep.lock"):  # no sweep sees a dir not yet busy
            _sweep_abandoned()
            tmp = Path(tempfile.mkdtemp(dir=staging_dir()))
            busy = locks.acquire(tmp / BUSY)
        try:
            with busy:
                yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def build_lock(name: str) -> AbstractContextManager[locks.Lock]:
    """Serialize builds of one image name across processes."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    return locks.held(staging_dir() / f".{safe}.lock")


def add(db: Database, name: str, built: Path | None, source: str, *,
        digest: str | None = None, config: ImageConfig | None = None,
        layers: tuple[str, ...] = (), image_id: str | None = None) -> Image:
    """Move a freshly built ext4 file into the store under `name`. `digest` names the
    content when the builder knows it (the sha256 of the tree it was made from);
    `built` may be None when the file with that digest is in the store already."""
    if built is not None:
        digest = digest or _digest(built)
    if digest is None:
        raise ValueError("add() without a built file needs the digest of a stored one")
    dest = blob_path(digest)
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if built is not None and dest.exists():
        built.unlink()
    elif built is not None:
        os.chmod(built, 0o444)
        os.replace(built, dest)
    image = Image(name, digest, dest.stat().st_size, source, time.time(),
                  config or ImageConfig(), layers, image_id)
    rows.upsert(db, image)
    return image


def find(db: Database, name: str) -> Image | None:
    """The image `name` (or `name:latest`) if its row exists and its file is in the store."""
    for candidate in (name, f"{name}:latest"):
        image = rows.get(db, candidate)
        if image is not None and image.path.exists():
            return image
        if ":" in name.rpartition("/")[2] or "@" in name:
            break
    return None


def get(db: Database, name: str) -> Image:
    image = find(db, name)
    if image is None:
        raise NotFound(f"no image named {name!r}", "microbox image list")
    return image


def all_images(db: Database) -> list[Image]:
    return rows.all_images(db)


def reuse(db: Database, name: str, image_id: str, source: str) -> Image | None:
    """Point `name` at an image already made from the same OCI config, if any."""
    for known in rows.by_image_id(db, image_id):
        if known.path.exists():
            image = replace(known, name=name, source=source, created_at=time.time())
            rows.upsert(db, image)
            return image
    return None


def tag(db: Database, source: str, target: str) -> Image:
    image = replace(get(db, source), name=target, created_at=time.time())
    rows.upsert(db, image)
    return image


def boxes_using(db: Database, digest: str) -> list[str]:
    return [r.name for r in boxes.all_boxes(db) if r.image_digest == digest]


def _unlink_unused_blob(db: Database, digest: str, kept: Mapping[str, Sequence[str]]) -> bool:
    if (any(i.digest == digest for i in rows.all_images(db)) or boxes_using(db, digest)
            or kept.get(digest)):
        return False
    blob_path(digest).unlink(missing_ok=True)
    return True


def remove(db: Database, name: str, force: bool = False,
           kept: Mapping[str, Sequence[str]] | None = None) -> Image:
    """Remove the name; its file goes too unless another name, a box, or what
    `kept` names for its digest (snapshots, by the SDK) still uses it. While a box
    or a snapshot uses it, only with force (they keep the file)."""
    kept = kept or {}
    with _exclusive():
        image = rows.get(db, name) or get(db, name)
        users = list(dict.fromkeys(  # a pool's waiting boxes are named by their pool
            f"pool {r.pool}" if r.pool else f"box {r.name}" for r in boxes.all_boxes(db)
            if r.image_digest == image.digest))
        users += [f"snapshot {n}" for n in kept.get(image.digest, ())]
        if users and not force:
            raise Refused(f"image {image.name!r} is used by {', '.join(users)}",
                          f"microbox image rm -f {image.name}", "to remove the name anyway")
        rows.delete(db, image.name)
        _unlink_unused_blob(db, image.digest, kept)
        return image


def prune(db: Database, every_unused: bool = False,
          kept: Mapping[str, Sequence[str]] | None = None,
          also: Callable[[], list[str]] | None = None) -> list[str]:
    """Remove what nothing uses: image files without a name, box or snapshot
    (`kept`), cached layers no image was made of, abandoned work in tmp/; with
    every_unused, also images no box or snapshot uses; and what `also` removes
    (the build cache), under the same lock, which no build holds then. Returns
    what was removed."""
    removed: list[str] = []
    with _exclusive():
        removed += also() if also is not None else []
        in_use = {r.image_digest for r in boxes.all_boxes(db) if r.image_digest}
        in_use |= {digest for digest, users in (kept or {}).items() if users}
        if every_unused:
            for image in rows.all_images(db):
                if image.digest not in in_use:
                    rows.delete(db, image.name)
                    removed.append(image.name)
        images = rows.all_images(db)
        keep = in_use | {i.digest for i in images}
        blobs = paths.images_dir() / "blobs"
        for f in blobs.glob("*.ext4") if blobs.exists() else ():
            if f.name.removesuffix(".ext4") not in keep:
                f.unlink(missing_ok=True)
                removed.append(f.name)
        wanted = {d for i in images for d in i.layers}
        for f in (layers_dir() / "sha256").iterdir():
            if f"sha256:{f.name}" not in wanted:
                f.unlink(missing_ok=True)
                removed.append(f"sha256:{f.name}")
        for f in staging_dir().iterdir():
            if not f.name.endswith(".lock"):
                shutil.rmtree(f, ignore_errors=True) if f.is_dir() else f.unlink()
    return removed
