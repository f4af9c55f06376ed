"""The build cache: one immutable qcow2 layer per step that changed files,
named by the step's cache key.

    <home>/images/build-cache/
        <key>.qcow2   what the disk held after the step: an overlay whose backing
                      file is the layer before it, or the base image's ext4 file
        <key>.json    the base image's digest and the parent layer; written last,
                      so a layer without it is not in the cache

A key is the sha256 of the parent's key and the step's inputs (the instruction,
the build arguments in scope, the hashes of the files a COPY reads), so an
unchanged step finds its layer and runs nothing. A layer is moved into place
(rename) only once it is complete. A layer is valid while its whole chain is
there: `image rm` of a base image may take its file, after which the layers
over it are misses and `image prune` removes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from microbox import paths
from microbox.store.images import blob_path
from microbox.vmm import qcow2


def cache_dir() -> Path:
    d = paths.images_dir() / "build-cache"
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return d


def key(parent: str, *parts: str) -> str:
    """The key of a step: its parent's key and its inputs."""
    h = hashlib.sha256(parent.encode())
    for part in parts:
        h.update(b"\0" + part.encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Top:
    """What a stage's disk is at some step: the base image's file, and the
    layer over it (None while no step changed files)."""
    base_digest: str
    layer: str | None = None  # the key of the top layer

    @property
    def path(self) -> Path:
        return layer_path(self.layer) if self.layer else blob_path(self.base_digest)


def layer_path(k: str) -> Path:
    return cache_dir() / f"{k}.qcow2"


def find(k: str, base_digest: str) -> Top | None:
    """The layer of key `k` over `base_digest`, if it and its whole backing
    chain exist (the first layer of a stage may stand on a warm-start
    template's disk, which `image rm` or gc can take)."""
    meta = _meta(k)
    if meta is None or meta.get("base") != base_digest:
        return None
    path: Path | None = layer_path(k)
    try:
        while path is not None and path.suffix == ".qcow2":
            backing = qcow2.backing_file(path)
            path = Path(backing) if backing else None
    except (OSError, qcow2.Qcow2Error):
        return None
    return Top(base_digest, k) if path is None or path.exists() else None


def _meta(k: str) -> dict[str, object] | None:
    if not layer_path(k).exists():
        return None
    try:
        meta = json.loads((cache_dir() / f"{k}.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def record(k: str, top: Top) -> None:
    """Note the layer `k` (already at layer_path(k)) as made over `top`."""
    meta = {"base": top.base_digest, "parent": top.layer}
    tmp = cache_dir() / f".{k}.json.tmp"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, cache_dir() / f"{k}.json")


def prune() -> list[str]:
    """Remove every cached layer (the caller holds the store's exclusive lock,
    so no build is reading them); returns what was removed."""
    d = cache_dir()
    gone = sorted(f"build cache {f.stem[:12]}" for f in d.glob("*.qcow2"))
    shutil.rmtree(d, ignore_errors=True)
    return gone
