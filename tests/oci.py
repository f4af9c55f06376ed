"""Build OCI layers and image layouts from Python, for the flattener's and the
registry's tests (pushed with `skopeo copy oci:... docker://...`)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backports import zstd

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
               "none": "application/vnd.oci.image.layer.v1.tar"}


@dataclass
class E:
    """One tar entry: kind is file, dir, symlink, hardlink, fifo or whiteout."""

    path: str
    kind: str = "file"
    data: bytes = b""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    link: str = ""
    xattrs: dict[str, str] = field(default_factory=dict)
    mtime: int = 1_700_000_000


def layer_tar(entries: list[E]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            info = tarfile.TarInfo(e.path)
            info.uid, info.gid, info.mtime = e.uid, e.gid, e.mtime
            data = None
            if e.kind == "file" or e.kind == "whiteout":
                info.type, info.size = tarfile.REGTYPE, len(e.data)
                info.mode = 0o644 if e.mode is None else e.mode
                data = io.BytesIO(e.data)
            elif e.kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755 if e.mode is None else e.mode
            elif e.kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, e.link, 0o777
            elif e.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, e.link
                info.mode = 0o644 if e.mode is None else e.mode
            elif e.kind == "fifo":
                info.type, info.mode = tarfile.FIFOTYPE, 0o644 if e.mode is None else e.mode
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e.xattrs.items()}
            tf.addfile(info, data)
    return buf.getvalue()


def compress(tar: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(tar, mtime=0)
    if how == "zstd":
        return zstd.compress(tar)
    return tar


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    """An OCI image layout on disk, with any number of tagged images."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.index: list[dict[str, Any]] = []

    def blob(self, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        digest = sha(data)
        (self.root / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def image(self, layers: list[list[E]], config: dict[str, Any] | None = None,
              compression: str = "gzip", arch: str = "amd64") -> dict[str, Any]:
        """Write the layers, config and manifest; returns the manifest's descriptor."""
        descs, diff_ids = [], []
        for entries in layers:
            tar = layer_tar(entries)
            diff_ids.append(sha(tar))
            descs.append(self.blob(compress(tar, compression), LAYER_TYPES[compression]))
        cfg = {"architecture": arch, "os": "linux", "config": config or {},
               "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        cfg_desc = self.blob(json.dumps(cfg).encode(), OCI_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg_desc,
                    "layers": descs}
        return self.blob(json.dumps(manifest).encode(), OCI_MANIFEST,
                         platform={"architecture": arch, "os": "linux"})

    def multi(self, manifests: list[dict[str, Any]]) -> dict[str, Any]:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        return self.blob(json.dumps(index).encode(), OCI_INDEX)

    def tag(self, desc: dict[str, Any], tag: str) -> None:
        entry = {k: v for k, v in desc.items() if k != "platform"}
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.index.append(entry)
        (self.root / "index.json").write_text(json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.index}))
