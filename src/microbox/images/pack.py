"""Packs: one portable, checksummed file holding a disk (an image's ext4, or a box's
disk flattened to a standalone image), the image config, the box spec and the kernel
and agent it was made with (docs/images.md, Packs).

    FILE, a plain tar whose members come in this order:
        manifest.json         all but the disk: format, version, arch, kind, source,
                              config, spec, requires, the disk's block map, and the
                              size and sha256 of every member after the next one
        manifest.json.sha256  the sha256 of manifest.json, in hex
        disk.zst              the disk's non-zero 4 KiB blocks, in order: one zstd frame

The first two members and the manifest's `format` and `version` keys are the same
in every version, so any microbox can tell a newer pack from a corrupt one. A pack
is read twice: once to check every checksum (nothing is written), then to write
its disk into the store, checking the uncompressed data's sha256 again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from backports import zstd

from microbox import __version__
from microbox.errors import HostError, NewerPack, PackError, VMError
from microbox.images import filestore
from microbox.images.config import ImageConfig
from microbox.images.progress import QUIET, Progress, human
from microbox.spec import BoxSpec
from microbox.store.db import Database
from microbox.store.images import Image

FORMAT = "microbox-pack"
VERSION = 1  # bump when a reader of the old version could misread a new pack
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.json.sha256"
DISK = "disk.zst"
ENCODING = "sparse-zstd"
BLOCK = 4096
CHUNK = 1 << 20
LEVEL = 3
MAX_MANIFEST = 64 << 20
MAX_DISK = 1 << 40  # a sanity bound on a disk's declared size
_ZERO_BLOCK = bytes(BLOCK)
_ZERO_CHUNK = bytes(CHUNK)
# What a pack keeps of a box's spec: the image is the pack's, a --kernel path is this host's.
_SPEC_TYPES: dict[str, tuple[type, ...]] = {
    "cpus": (int,), "memory_mib": (int,), "env": (dict,), "workdir": (str, type(None)),
    "user": (str, type(None)), "accel": (str,), "labels": (dict,), "cold": (bool,)}


@dataclass(frozen=True)
class PackInfo:
    """A pack file whose checksums were checked (or that was just written)."""

    path: Path
    manifest: dict[str, Any]
    size: int  # bytes of the pack file

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def disk(self) -> dict[str, Any]:
        return dict(self.manifest["disk"])

    @property
    def config(self) -> ImageConfig:
        return ImageConfig.from_oci(self.manifest.get("config"))

    @property
    def digest(self) -> str:
        """The content address of the disk in a store: a function of the disk's
        logical content alone (its size, its non-zero blocks and their bytes)."""
        d = self.disk
        key = {"block": d["block"], "extents": d["extents"], "sha256": d["sha256"],
               "size": d["size"]}
        return "sha256-" + hashlib.sha256(
            json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @property
    def image_name(self) -> str:
        """The name its disk gets in a store: never a name the user chose there."""
        source = self.manifest.get("source") or {}
        raw = str(source.get("box") or source.get("image") or "image")
        label = raw.rsplit("/", 1)[-1].split("@")[0].split(":")[0].lower()
        label = re.sub(r"[^a-z0-9._-]", "-", label).lstrip("._-")[:60] or "image"
        return f"pack-{label}:{self.digest[7:19]}"

    def spec(self, image: str) -> BoxSpec:
        """The box spec the pack carries, for a box of `image`."""
        return BoxSpec(image=image, **self.manifest["spec"])

    def to_json(self) -> dict[str, Any]:
        """The manifest without the block map (thousands of lines on a big disk)."""
        m = dict(self.manifest)
        disk = self.disk
        disk["extents"] = len(disk["extents"])
        return {**m, "disk": disk, "path": str(self.path), "bytes": self.size,
                "digest": self.digest, "image_name": self.image_name}


def merge(spec: BoxSpec, overrides: dict[str, Any]) -> BoxSpec:
    """The pack's spec with what the user gave: env and labels add to it, the rest
    replace it."""
    over = dict(overrides)
    over["env"] = {**spec.env, **(over.get("env") or {})}
    over["labels"] = {**spec.labels, **(over.get("labels") or {})}
    return replace(spec, **over)


# -- writing --------------------------------------------------------------------


def requires(spec: BoxSpec) -> dict[str, Any]:
    """The kernel and agent this microbox gives boxes now (informational: a pack
    boots with the kernel and agent of the machine that imports it)."""
    from microbox.agent import protocol
    from microbox.artifacts import agent, kernel

    kern: dict[str, Any] = {"custom": bool(spec.kernel or os.environ.get("MICROBOX_KERNEL"))}
    with contextlib.suppress(Exception):
        kern["cache_key"] = kernel.cache_key()
        kern["source"] = kernel.source().tarball.name
    agent_id: dict[str, Any] = {"protocol": protocol.VERSION}
    with contextlib.suppress(Exception):
        agent_id["cache_key"] = agent.cache_key()
    return {"kernel": kern, "agent": agent_id}


def write(out: Path, disk: Path, *, disk_format: str, kind: str, source: dict[str, Any],
          config: ImageConfig, spec: BoxSpec, progress: Progress = QUIET) -> PackInfo:
    """Write the pack `out` (replaced whole, by rename) of `disk`, a raw ext4 file or
    a qcow2 overlay (flattened with its whole backing chain first)."""
    out = out.absolute()
    if out.is_dir():
        raise PackError(f"{out} is a directory; give -o a file name")
    kept = {k: v for k, v in spec.to_json().items() if k in _SPEC_TYPES}
    manifest: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "created_by": f"microbox {__version__}",
        "created_at": time.time(),
        "arch": platform.machine(), "kind": kind, "source": source,
        "config": json.loads(config.to_json()), "spec": kept, "requires": requires(spec)}
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as work:
        raw = disk
        if disk_format != "raw":
            raw = Path(work) / "disk.raw"
            progress.step("flattening the disk and its backing chain (qemu-img convert)")
            flatten_disk(disk, disk_format, raw)
        packed = Path(work) / DISK
        manifest["disk"], member = _compress(raw, packed, progress)
        manifest["members"] = [member]
        text = json.dumps(manifest, indent=1).encode()
        tmp = Path(work) / "pack.tar"
        progress.step(f"writing {out.name}")
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
            mtime = int(manifest["created_at"])
            _add(tf, MANIFEST, text, mtime)
            _add(tf, MANIFEST_SUM, (hashlib.sha256(text).hexdigest() + "\n").encode(), mtime)
            with open(packed, "rb") as f:
                tf.addfile(_info(DISK, packed.stat().st_size, mtime), f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    return PackInfo(out, manifest, out.stat().st_size)


def _info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    return info


def _add(tf: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    tf.addfile(_info(name, len(data), mtime), io.BytesIO(data))


def flatten_disk(disk: Path, disk_format: str, dest: Path) -> None:
    """A standalone sparse raw copy of `disk` with everything its backing chain
    holds. `-U`: a running box may hold the chain's lower files open, read-only
    (a build's layers; a commit copies a box's top while its vCPUs are stopped)."""
    try:
        done = subprocess.run(["qemu-img", "convert", "-U", "-f", disk_format, "-O", "raw",
                               str(disk), str(dest)], capture_output=True, text=True)
    except FileNotFoundError:
        raise HostError("qemu-img is missing", "apt-get install -y qemu-utils") from None
    if done.returncode != 0:
        raise VMError(f"cannot flatten the disk {disk}: {done.stderr.strip()[-500:]}")


def data_runs(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(offset, end) of the file's data, from SEEK_DATA/SEEK_HOLE, on BLOCK boundaries."""
    off = 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after off
                return
            if exc.errno != errno.EINVAL:
                raise
            yield off, size  # a file system that cannot say: read it all
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        start = max(off, start // BLOCK * BLOCK)
        end = min(size, -(-end // BLOCK) * BLOCK)
        yield start, end
        off = end


def _nonzero(fd: int, size: int) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of runs of non-zero blocks, each run within one chunk."""
    for start, end in data_runs(fd, size):
        pos = start
        while pos < end:
            chunk = os.pread(fd, min(CHUNK, end - pos), pos)
            if not chunk:
                raise PackError(f"the disk ended at {pos} while being packed")
            n = len(chunk)
            if chunk != _ZERO_CHUNK[:n]:
                i = 0
                while i < n:
                    while i < n and chunk[i:i + BLOCK] == _ZERO_BLOCK[:min(BLOCK, n - i)]:
                        i += BLOCK
                    j = i
                    while j < n and chunk[j:j + BLOCK] != _ZERO_BLOCK[:min(BLOCK, n - j)]:
                        j += BLOCK
                    if j > i:
                        yield pos + i, chunk[i:j]
                    i = j
            pos += n


def _compress(raw: Path, dest: Path, progress: Progress) -> tuple[dict[str, Any],
                                                                   dict[str, Any]]:
    """The canonical sparse encoding of `raw`: the map of its non-zero blocks (merged
    into extents) and those blocks, zstd-compressed, in `dest`."""
    workers = min(4, os.cpu_count() or 1)
    options: dict[int, int] = {zstd.CompressionParameter.compression_level: LEVEL,
               zstd.CompressionParameter.checksum_flag: 1}
    if workers > 1:
        options[zstd.CompressionParameter.nb_workers] = workers
    comp = zstd.ZstdCompressor(options=options)
    extents: list[list[int]] = []
    data = hashlib.sha256()
    packed = hashlib.sha256()
    written = done = 0
    fd = os.open(raw, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        progress.step(f"compressing the disk ({human(size)}, sparse)")
        with open(dest, "wb") as f:
            def emit(blob: bytes) -> None:
                nonlocal written
                if blob:
                    f.write(blob)
                    packed.update(blob)
                    written += len(blob)

            for off, blob in _nonzero(fd, size):
                if extents and extents[-1][0] + extents[-1][1] == off:
                    extents[-1][1] += len(blob)
                else:
                    extents.append([off, len(blob)])
                data.update(blob)
                done += len(blob)
                emit(comp.compress(blob))
                progress.advance(done, None)
            emit(comp.flush())
    finally:
        os.close(fd)
    disk = {"member": DISK, "encoding": ENCODING, "block": BLOCK, "size": size,
            "data_bytes": done, "sha256": data.hexdigest(), "extents": extents}
    return disk, {"name": DISK, "size": written, "sha256": packed.hexdigest()}


# -- reading --------------------------------------------------------------------


def _corrupt(path: Path, why: str) -> PackError:
    return PackError(f"{path} is not a usable microbox pack: {why}")


@contextlib.contextmanager
def _tar(path: Path) -> Iterator[tarfile.TarFile]:
    try:
        tf = tarfile.open(path, "r:")  # noqa: SIM115 (closed by the `with` below)
    except FileNotFoundError:
        raise PackError(f"no pack at {path}") from None
    except IsADirectoryError:
        raise PackError(f"{path} is a directory, not a pack") from None
    except (tarfile.TarError, EOFError):
        raise _corrupt(path, "it is not a tar archive (the file is corrupt or truncated)"
                       ) from None
    with tf:
        yield tf


def _damaged(last: tarfile.TarInfo | None, path: Path) -> PackError:
    """tarfile stopped on the header after `last`: past the end of the file, or damaged."""
    size = path.stat().st_size
    if last is None or last.offset_data + last.size + 512 > size:
        return _corrupt(path, f"the file is truncated (it ends after {human(size)})")
    return _corrupt(path, "a member's header is damaged")


def _read(tf: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> bytes:
    f = tf.extractfile(member)
    if f is None:
        raise _corrupt(path, f"{member.name} is not a file")
    try:
        data = f.read()
    except (tarfile.TarError, EOFError):
        raise _corrupt(path, f"{member.name} is truncated") from None
    if len(data) != member.size:
        raise _corrupt(path, f"{member.name} is truncated")
    return data


def _manifest(tf: tarfile.TarFile, path: Path) -> tuple[dict[str, Any], tarfile.TarInfo]:
    """manifest.json, after its own checksum; then its format, version and arch.
    Also returns the member read last."""
    first = second = None
    try:
        first = tf.next()
        second = tf.next() if first is not None else None
    except (tarfile.TarError, EOFError):
        raise _damaged(first, path) from None
    if first is None or first.name != MANIFEST or not first.isfile():
        raise _corrupt(path, f"it does not begin with {MANIFEST}")
    if first.size > MAX_MANIFEST:
        raise _corrupt(path, f"its {MANIFEST} is {human(first.size)}")
    text = _read(tf, first, path)
    if second is None or second.name != MANIFEST_SUM or second.size > 200:
        raise _corrupt(path, f"{MANIFEST_SUM} is missing (the file is truncated or corrupt)")
    want = _read(tf, second, path).decode(errors="replace").strip()
    if hashlib.sha256(text).hexdigest() != want:
        raise _corrupt(path, f"the checksum of {MANIFEST} does not match (the file is corrupt)")
    try:
        manifest = json.loads(text)
    except ValueError:
        raise _corrupt(path, f"{MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _corrupt(path, f"{MANIFEST} is not a microbox pack manifest")
    version = manifest.get("version")
    if not isinstance(version, int) or version < 1:
        raise _corrupt(path, f"its format version {version!r} is not a version")
    if version > VERSION:
        raise NewerPack(f"{path} is a version {version} pack, made by a newer microbox "
                        f"than this one, which reads versions up to {VERSION}",
                        "pip install --upgrade microbox")
    here = platform.machine()
    if manifest.get("arch") != here:
        raise PackError(f"{path} holds a disk for {manifest.get('arch')} machines; "
                        f"this one is {here}")
    _check_shape(manifest, path)
    return manifest, second


def _check_shape(m: dict[str, Any], path: Path) -> None:
    """Types and bounds of what the reader relies on (a pack is untrusted input)."""
    try:
        assert m["kind"] in ("image", "box")
        assert isinstance(m["source"], dict) and isinstance(m["config"], dict)
        spec = m["spec"]
        assert isinstance(spec, dict) and set(spec) <= set(_SPEC_TYPES)
        for key, value in spec.items():
            assert isinstance(value, _SPEC_TYPES[key])
            assert key != "cpus" or not isinstance(value, bool)
            if isinstance(value, dict):
                assert all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        members = m["members"]
        assert isinstance(members, list) and members
        names = set()
        for e in members:
            assert isinstance(e["name"], str) and e["name"] not in names
            assert isinstance(e["size"], int) and e["size"] >= 0
            assert re.fullmatch(r"[0-9a-f]{64}", e["sha256"])
            names.add(e["name"])
        d = m["disk"]
        assert d["encoding"] == ENCODING and d["block"] == BLOCK and d["member"] in names
        assert isinstance(d["size"], int) and 0 < d["size"] <= MAX_DISK
        assert re.fullmatch(r"[0-9a-f]{64}", d["sha256"])
        end = total = 0
        for ext in d["extents"]:
            off, length = ext
            assert type(off) is int and type(length) is int and off % BLOCK == 0
            assert off >= end and length > 0 and off + length <= d["size"]
            end = off + length
            total += length
        assert total == d["data_bytes"]
    except (AssertionError, KeyError, TypeError, ValueError):
        raise _corrupt(path, f"its {MANIFEST} is malformed") from None


def verify(path: Path, progress: Progress = QUIET) -> PackInfo:
    """Check the pack whole (manifest, version, arch, every member's size and
    sha256) without writing anything; the first problem is one PackError."""
    path = Path(path)
    progress.step(f"verifying {path.name}")
    with _tar(path) as tf:
        manifest, last = _manifest(tf, path)
        found: dict[str, tarfile.TarInfo] = {}
        try:
            while (m := tf.next()) is not None:
                if m.name in found or m.name in (MANIFEST, MANIFEST_SUM):
                    raise _corrupt(path, f"it holds {m.name} twice")
                found[m.name] = last = m
        except (tarfile.TarError, EOFError):
            raise _damaged(last, path) from None
        file_size = path.stat().st_size
        _check_end(last, path, file_size)
        listed = {e["name"]: e for e in manifest["members"]}
        if set(found) - set(listed):
            raise _corrupt(path, f"it holds {sorted(set(found) - set(listed))[0]}, which its "
                           "manifest does not list")
        done = 0
        for name, entry in listed.items():
            m = found.get(name)
            if m is None:
                raise _corrupt(path, f"{name} is missing (the file is truncated or corrupt)")
            if m.offset_data + m.size > file_size or m.size != entry["size"]:
                have = human(max(0, file_size - m.offset_data))
                raise _corrupt(path, f"{name} is truncated ({have} of {human(entry['size'])})")
            digest = hashlib.sha256()
            for chunk in _chunks(tf, m, path):
                digest.update(chunk)
                done += len(chunk)
                progress.advance(done, None)
            if digest.hexdigest() != entry["sha256"]:
                raise _corrupt(path, f"the checksum of {name} does not match (the file is corrupt)")
    return PackInfo(path, manifest, file_size)


def _check_end(last: tarfile.TarInfo, path: Path, file_size: int) -> None:
    """The end-of-archive marker (two zero blocks) follows the last member: a file
    cut anywhere, even in the padding after the last member's data, is refused."""
    end = last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    with open(path, "rb") as f:
        f.seek(end)
        if f.read(2 * tarfile.BLOCKSIZE) != bytes(2 * tarfile.BLOCKSIZE):
            raise _corrupt(path, f"the file is truncated (it ends after {human(file_size)})")


def _chunks(tf: tarfile.TarFile, m: tarfile.TarInfo, path: Path) -> Iterator[bytes]:
    f = tf.extractfile(m)
    if f is None:
        raise _corrupt(path, f"{m.name} is not a file")
    left = m.size
    try:
        while left:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                raise _corrupt(path, f"{m.name} is truncated")
            left -= len(chunk)
            yield chunk
    except (tarfile.TarError, EOFError):
        raise _corrupt(path, f"{m.name} is truncated") from None


def extract_disk(info: PackInfo, dest: Path, progress: Progress = QUIET) -> None:
    """Write the pack's disk to `dest` (sparse), checking its data's sha256."""
    d = info.disk
    path = info.path
    progress.step(f"writing the disk ({human(d['data_bytes'])} of data)")
    digest = hashlib.sha256()
    done = 0
    with _tar(path) as tf, open(dest, "wb") as out:
        out.truncate(d["size"])
        src = tf.extractfile(d["member"])
        if src is None:
            raise _corrupt(path, f"{d['member']} is not a file")
        try:
            with zstd.ZstdFile(src, "rb") as z:
                for off, length in d["extents"]:
                    out.seek(off)
                    left = length
                    while left:
                        chunk = z.read(min(CHUNK, left))
                        if not chunk:
                            raise _corrupt(path, f"{d['member']} holds less data than its map")
                        digest.update(chunk)
                        out.write(chunk)
                        left -= len(chunk)
                        done += len(chunk)
                        progress.advance(done, d["data_bytes"])
                if z.read(1):
                    raise _corrupt(path, f"{d['member']} holds more data than its map")
        except (zstd.ZstdError, EOFError, tarfile.TarError) as exc:
            raise _corrupt(path, f"{d['member']} cannot be decompressed ({exc})") from None
    if digest.hexdigest() != d["sha256"]:
        raise _corrupt(path, "the checksum of the disk's data does not match")


def import_verified(db: Database, info: PackInfo, progress: Progress = QUIET) -> Image:
    """Put a verified pack's disk into the store (content-addressed: a disk already
    there is not written again) under `info.image_name`, with the pack's config."""
    digest = info.digest
    with filestore.staging() as tmp:
        built: Path | None = None
        if not filestore.blob_path(digest).exists():
            built = tmp / "disk.ext4"
            extract_disk(info, built, progress)
        return filestore.add(db, info.image_name, built, f"pack {info.path.resolve()}",
                         digest=digest, config=info.config)
