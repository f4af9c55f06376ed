"""`image pull`: skopeo fetches into the shared layer cache, the flattener and
mke2fs make the ext4 file, the store names it. Work happens in a private dir under
the store; only renames leave it, so a failed or killed pull leaves nothing half
made, and a retry finds every layer already fetched."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microbox.errors import BuildError
from microbox.images import auth, filestore, flatten, mkfs, reference, skopeo
from microbox.images.config import ImageConfig
from microbox.images.progress import QUIET, Progress, human
from microbox.store.db import Database
from microbox.store.images import Image

TAG = "pull"
LAYER_TYPES = ("application/vnd.oci.image.layer.v1.tar",
               "application/vnd.oci.image.layer.nondistributable.v1.tar",
               "application/vnd.docker.image.rootfs.diff.tar",
               "application/vnd.docker.image.rootfs.foreign.diff.tar")


@dataclass(frozen=True)
class Fetched:
    manifest_digest: str
    config_digest: str
    config: dict[str, Any]
    layers: list[flatten.Layer]
    sizes: list[int]


def _blob_json(digest: str) -> Any:
    try:
        return json.loads(filestore.layer_path(digest).read_bytes())
    except (OSError, ValueError) as exc:
        raise BuildError(f"the pulled blob {digest} is unreadable ({exc})") from None


def read_layout(layout: Path, tag: str) -> Fetched:
    """The image skopeo wrote as `tag` into `layout` (blobs in the shared dir)."""
    index = json.loads((layout / "index.json").read_text())
    chosen = [m for m in index.get("manifests", [])
              if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag]
    if len(chosen) != 1:
        raise BuildError(f"skopeo left no single image tagged {tag!r} in {layout}")
    manifest_digest = chosen[0]["digest"]
    manifest = _blob_json(manifest_digest)
    config_digest = manifest["config"]["digest"]
    config = _blob_json(config_digest)
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    descs = manifest.get("layers") or []
    layers = []
    for i, desc in enumerate(descs):
        kind = str(desc.get("mediaType", "")).split("+")[0]
        if kind not in LAYER_TYPES:
            raise BuildError(f"layer {i + 1} of the image has an unknown media type "
                             f"{desc.get('mediaType')!r}")
        layers.append(flatten.Layer(filestore.layer_path(desc["digest"]), desc["digest"],
                                    diff_ids[i] if len(diff_ids) == len(descs) else None))
    return Fetched(manifest_digest, config_digest, config, layers,
                   [int(d.get("size", 0)) for d in descs])


def _advance(progress: Progress, total: int) -> Callable[[int], None]:
    return lambda n: progress.advance(n, total)


def unpack(fetched: Fetched, tmp: Path, progress: Progress) -> list[Path]:
    """Decompress and verify each layer into `tmp`; a corrupt one leaves the cache."""
    tars = []
    for i, (layer, size) in enumerate(zip(fetched.layers, fetched.sizes, strict=True)):
        progress.step(f"unpacking layer {i + 1}/{len(fetched.layers)} "
                      f"{layer.digest[7:19]} ({human(size)})")
        out = tmp / f"layer{i}.tar"
        try:
            flatten.spool(layer, out, _advance(progress, size))
        except BuildError:
            layer.path.unlink(missing_ok=True)  # fetched again by the next pull
            raise
        tars.append(out)
    return tars


def pull(db: Database, text: str, *, insecure: bool = False,
         progress: Progress = QUIET) -> Image:
    """Pull `text` into the store under its familiar name (`alpine:3`, `host:5000/a:1`)."""
    ref = reference.parse(text)
    name = ref.familiar
    with filestore.build_lock(name), filestore.staging() as tmp:
        progress.step(f"pulling {name}")
        layout = tmp / "layout"
        skopeo.copy(ref, layout, TAG, filestore.layers_dir(), plain_http=ref.plain_http or insecure,
                    authfile=auth.authfile_for(ref.registry), on_line=progress.step,
                    tty=progress.tty)
        fetched = read_layout(layout, TAG)
        source = f"{ref.docker.split('@')[0]}@{fetched.manifest_digest}"
        known = filestore.reuse(db, name, fetched.config_digest, source)
        if known is not None:
            progress.step(f"{name}: up to date ({fetched.config_digest[:19]})")
            return known
        tars = unpack(fetched, tmp, progress)
        out = tmp / "image.ext4"
        try:
            digest = mkfs.from_layers(tars, out, ref.repository.rsplit("/", 1)[-1], progress)
        except BuildError as exc:
            raise BuildError(f"cannot make {name}: {exc.message}") from None
        return filestore.add(db, name, out, source, digest=digest,
                         config=ImageConfig.from_oci(fetched.config.get("config")),
                         layers=tuple(la.digest for la in fetched.layers),
                         image_id=fetched.config_digest)
