"""An OCI image layout (image-spec v1.1, "image-layout") holding one image of
one gzip layer, for `skopeo copy oci:DIR:TAG docker://REF` to push.

    DIR/oci-layout            {"imageLayoutVersion": "1.0.0"}
    DIR/index.json            the manifest, tagged (org.opencontainers.image.ref.name)
    DIR/blobs/sha256/<hex>    the layer, the image config, the manifest

The layer is written once, streamed: its tar goes through a hash (the diff_id
the config lists) into gzip, whose output goes through a second hash (the blob
digest the manifest lists) into a file renamed to its digest once whole. The
config and the manifest hold no timestamp, so the same tree and config make
the same digests every time.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
GZIP_LEVEL = 6  # what Docker writes layers with


@dataclass(frozen=True)
class Layer:
    digest: str  # "sha256:<hex>" of the gzip blob
    diff_id: str  # "sha256:<hex>" of the tar inside it
    size: int  # bytes of the blob
    tar_size: int  # bytes of the tar


@dataclass(frozen=True)
class Written:
    manifest_digest: str
    manifest_size: int
    config_digest: str
    layer: Layer


class _Hashing(io.RawIOBase):
    """A write-only file that hashes and counts every byte on its way to `out`."""

    def __init__(self, out: IO[bytes], progress: Callable[[int], None] | None = None) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.count = 0
        self.progress = progress

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.sha.update(data)
        self.count += len(data)
        self.out.write(data)
        if self.progress is not None:
            self.progress(self.count)
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def _blobs(root: Path) -> Path:
    d = root / "blobs" / "sha256"
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def layer(root: Path, progress: Callable[[int], None] | None = None
          ) -> Iterator[tuple[tarfile.TarFile, list[Layer]]]:
    """A PAX TarFile to add the layer's members to, and a list that holds the
    Layer once the block ends (the blob then in `root`). `progress` is told the
    tar bytes written so far."""
    blobs = _blobs(root)
    partial = blobs / ".layer.partial"
    done: list[Layer] = []
    with open(partial, "wb") as f:
        packed = _Hashing(f)
        with gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=packed,
                           mtime=0) as gz:
            plain = _Hashing(gz, progress)  # type: ignore[arg-type]  # a binary file
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tf:
                yield tf, done
    partial.rename(blobs / packed.digest.removeprefix("sha256:"))
    done.append(Layer(packed.digest, plain.digest, packed.count, plain.count))


def _blob(root: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (_blobs(root) / digest.removeprefix("sha256:")).write_bytes(data)
    return digest, len(data)


def image_config(config: dict[str, Any], diff_ids: list[str]) -> dict[str, Any]:
    """The OCI image config of a linux/amd64 image of these layers; `config` is
    its `config` object (Env, Entrypoint, Cmd...), empty fields left out."""
    return {"architecture": "amd64", "os": "linux",
            "config": {k: v for k, v in config.items() if v},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "microbox image push"} for _ in diff_ids]}


def write_image(root: Path, made: Layer, config: dict[str, Any], tag: str) -> Written:
    """The config, the manifest and index.json of an image of the layer `made`
    (already in `root`), tagged `tag`."""
    cfg_digest, cfg_size = _blob(root, _dumps(image_config(config, [made.diff_id])))
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                "config": {"mediaType": CONFIG, "digest": cfg_digest, "size": cfg_size},
                "layers": [{"mediaType": LAYER, "digest": made.digest, "size": made.size}]}
    man_digest, man_size = _blob(root, _dumps(manifest))
    index = {"schemaVersion": 2, "mediaType": INDEX,
             "manifests": [{"mediaType": MANIFEST, "digest": man_digest, "size": man_size,
                            "annotations": {REF_NAME: tag}}]}
    (root / "index.json").write_bytes(_dumps(index))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return Written(man_digest, man_size, cfg_digest, made)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
