"""Flatten OCI layers into one tar stream, with the standard `tarfile` module.

Each layer (gzip, zstd or plain tar) is first decompressed into a scratch file
while its compressed sha256 (the blob digest) and uncompressed sha256 (the
config's diff_id) are checked. The final tree is then computed from the layers'
headers alone, applying in order: whiteouts (`.wh.NAME`) and opaque directories
(`.wh..wh..opq`) of a layer hide what the *lower* layers had, then its entries
replace what is there (a directory over a directory keeps the children; any
other type change drops the old subtree). Hard links name an inode, so a link
whose target is later replaced keeps the old content.

`write_tar` emits the tree sorted by path (parents first, a hard link after the
file it links to) as one PAX tar: ownership, modes (setuid included), mtimes,
devices, symlinks and xattrs (`SCHILY.xattr.*`) are kept. `mke2fs -d -` turns it
into the image with no root needed.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import gzip
import hashlib
import io
import posixpath
import tarfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from backports import zstd

from microbox.errors import BuildError

CHUNK = 1 << 20
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_XATTR_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.")
Progress = Callable[[int], None]


def _none(_: int) -> None:
    pass


@dataclass(frozen=True)
class Layer:
    path: Path  # the blob as fetched
    digest: str  # "sha256:<hex>" of the blob
    diff_id: str | None = None  # "sha256:<hex>" of its uncompressed tar, when known


class _Hashing(io.RawIOBase):
    """Reads a file, hashing (and counting) every byte that passes."""

    def __init__(self, f: IO[bytes], progress: Progress) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.count = 0
        self.progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.f.read(len(b))
        n = len(data)
        b[:n] = data
        self.sha.update(data)
        self.count += n
        self.progress(self.count)
        return n


def _decompressed(buffered: io.BufferedReader[Any], magic: bytes) -> IO[bytes]:
    if magic.startswith(b"\x1f\x8b"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=buffered, mode="rb"))
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        return cast(IO[bytes], zstd.ZstdFile(buffered, "rb"))
    return cast(IO[bytes], _Unclosed(buffered))


class _Unclosed(io.RawIOBase):
    """A plain tar read through without closing the stream under it."""

    def __init__(self, f: io.BufferedReader[Any]) -> None:
        self.f = f

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        return self.f.readinto(b)


def decompress(src: IO[bytes], dest: Path, progress: Progress = _none) -> tuple[str, str]:
    """Write the tar in `src` (gzip, zstd or plain, told by its first bytes) to `dest`;
    returns the sha256 of what was read and of what was written ("sha256:<hex>")."""
    raw = _Hashing(src, progress)
    buffered = io.BufferedReader(raw, CHUNK)
    magic = buffered.peek(4)[:4]
    plain = hashlib.sha256()
    try:
        with _decompressed(buffered, magic) as data, open(dest, "wb") as out:
            while chunk := data.read(CHUNK):
                plain.update(chunk)
                out.write(chunk)
            while buffered.read(CHUNK):  # what follows the compressed stream counts too
                pass
    except (OSError, EOFError, zstd.ZstdError) as exc:
        raise BuildError(f"not a readable tar, gzip or zstd stream ({exc})") from None
    return "sha256:" + raw.sha.hexdigest(), "sha256:" + plain.hexdigest()


def spool(layer: Layer, dest: Path, progress: Progress = _none) -> None:
    """Decompress `layer` into `dest`, checking its digest and diff_id.

    A mismatch raises BuildError (the blob is corrupt; the caller drops it)."""
    with open(layer.path, "rb") as f:
        try:
            got, plain = decompress(f, dest, progress)
        except BuildError as exc:
            raise BuildError(f"layer {layer.digest} is damaged: {exc.message}") from None
    if got != layer.digest:
        raise BuildError(f"layer {layer.digest} does not match its digest (got {got})")
    if layer.diff_id is not None and plain != layer.diff_id:
        raise BuildError(f"layer {layer.digest} does not match its diff_id {layer.diff_id}")


def _normalize(name: str) -> str:
    """A member name as a path relative to the root ('' for the root itself)."""
    path = posixpath.normpath(name.lstrip("/"))
    if path == ".." or path.startswith("../"):
        raise BuildError(f"a layer has a path outside the image root: {name!r}")
    return "" if path == "." else path


@dataclass
class _Node:
    info: tarfile.TarInfo  # metadata (for a hard link: its inode's)
    layer: int
    inode: int | None = None  # regular files: key into Tree.sources


@dataclass
class Tree:
    """The merged filesystem: path -> node, with each regular file's data source."""

    nodes: dict[str, _Node] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=lambda: {"": set()})
    sources: dict[int, tuple[int, tarfile.TarInfo]] = field(default_factory=dict)
    root: tarfile.TarInfo | None = None

    def _remove(self, path: str) -> None:
        node = self.nodes.pop(path, None)
        if node is None:
            return
        parent, _, base = path.rpartition("/")
        self.children.get(parent, set()).discard(base)
        for child in self.children.pop(path, set()):
            self._remove(f"{path}/{child}")

    def _ensure_dir(self, path: str, layer: int, like: tarfile.TarInfo) -> None:
        if path == "":
            return
        node = self.nodes.get(path)
        if node is not None and node.info.isdir():
            return
        if node is not None:
            self._remove(path)
        parent, _, base = path.rpartition("/")
        self._ensure_dir(parent, layer, like)
        info = tarfile.TarInfo(path)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, like.mtime
        self.nodes[path] = _Node(info, layer)
        self.children[parent].add(base)
        self.children.setdefault(path, set())

    def _whiteout(self, path: str) -> None:
        parent, _, base = path.rpartition("/")
        if base == OPAQUE:
            for child in list(self.children.get(parent, ())):
                self._remove(f"{parent}/{child}" if parent else child)
        elif not base.startswith(WHITEOUT + WHITEOUT):  # other .wh..wh. names are aufs' own
            hidden = base[len(WHITEOUT):]
            self._remove(f"{parent}/{hidden}" if parent else hidden)

    def _put(self, path: str, member: tarfile.TarInfo, layer: int, key: int) -> None:
        if path == "":
            if member.isdir():
                self.root = member
            return
        parent, _, base = path.rpartition("/")
        self._ensure_dir(parent, layer, member)
        old = self.nodes.get(path)
        if member.islnk():
            target = self.nodes.get(_normalize(member.linkname))
            if target is None or target.inode is None:
                raise BuildError(f"a layer hard-links {path!r} to {member.linkname!r}, "
                                 "which is not a regular file below it")
            node = _Node(target.info, layer, target.inode)
        elif member.isreg():
            self.sources[key] = (layer, member)
            node = _Node(member, layer, key)
        else:
            node = _Node(member, layer)
        if old is not None and not (old.info.isdir() and member.isdir()):
            self._remove(path)
        self.nodes[path] = node
        self.children[parent].add(base)
        if member.isdir():
            self.children.setdefault(path, set())

    def apply(self, layer: int, members: list[tarfile.TarInfo]) -> None:
        """Add one layer: its whiteouts act on the layers below it, then its entries."""
        named = [(_normalize(m.name), m) for m in members]
        for path, _ in named:
            if path.rpartition("/")[2].startswith(WHITEOUT):
                self._whiteout(path)
        for i, (path, m) in enumerate(named):
            if not path.rpartition("/")[2].startswith(WHITEOUT):
                self._put(path, m, layer, (layer << 32) | i)

    def walk(self) -> Iterator[tuple[str, _Node]]:
        """Every node, parents before children, siblings sorted."""
        stack = [""]
        while stack:
            d = stack.pop()
            for name in sorted(self.children.get(d, ()), reverse=True):
                path = f"{d}/{name}" if d else name
                stack.append(path)
            if d:
                yield d, self.nodes[d]

    def usage(self) -> tuple[int, int]:
        """Bytes of data blocks (4 KiB each) and inodes the tree needs in ext4."""
        blocks, inodes, seen = 0, 0, set()
        for path, node in self.nodes.items():
            info = node.info
            if info.isdir():
                names = self.children.get(path, set())
                blocks += max(1, -(-sum(12 + len(n) for n in names) // 4096))
                inodes += 1
            elif node.inode is not None:
                if node.inode not in seen:
                    seen.add(node.inode)
                    blocks += -(-info.size // 4096)
                    inodes += 1
            else:
                inodes += 1
                blocks += 1 if info.issym() and len(info.linkname) >= 60 else 0
            if sum(len(v) for k, v in info.pax_headers.items()
                   if k.startswith(_XATTR_PREFIXES)) > 64:
                blocks += 1
        return blocks * 4096, inodes


def read_tree(tars: list[Path]) -> Tree:
    """The merged tree of these uncompressed layer tars (bottom first)."""
    tree = Tree()
    for i, path in enumerate(tars):
        try:
            with tarfile.open(path, "r:") as tf:
                tree.apply(i, tf.getmembers())
        except tarfile.TarError as exc:
            raise BuildError(f"layer {i + 1} is not a valid tar archive ({exc})") from None
    return tree


def _out_info(path: str, info: tarfile.TarInfo) -> tarfile.TarInfo:
    out = copy.copy(info)
    out.name = path
    out.uname = out.gname = ""
    out.pax_headers = {k: v for k, v in info.pax_headers.items()
                       if k.startswith(_XATTR_PREFIXES)}
    if out.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                        tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
        out.type = tarfile.REGTYPE  # CONTTYPE, GNU sparse: a regular file once read
    return out


def xattrs(tree: Tree) -> list[tuple[str, str, bytes]]:
    """(path, name, value) of every extended attribute in the tree, hard links once."""
    found, seen = [], set()
    for path, node in tree.walk():
        if node.inode is not None:
            if node.inode in seen:
                continue
            seen.add(node.inode)
        for key, value in node.info.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                found.append((path, key[13:], value.encode("utf-8", "surrogateescape")))
            elif key.startswith("LIBARCHIVE.xattr."):
                name = urllib.parse.unquote(key[17:])
                found.append((path, name, base64.b64decode(value + "=" * (-len(value) % 4))))
    return found


def write_tar(tree: Tree, tars: list[Path], out: IO[bytes]) -> None:
    """Stream the tree as one PAX tar into `out` (xattrs included, though mke2fs
    reads only security.capability from a tar: see mkfs.set_xattrs)."""
    opened: dict[int, tarfile.TarFile] = {}
    first_path: dict[int, str] = {}
    with contextlib.ExitStack() as stack, \
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as w:
        if tree.root is not None:
            w.addfile(_out_info(".", tree.root))
        for path, node in tree.walk():
            if node.inode is None:
                w.addfile(_out_info(path, node.info))
                continue
            if node.inode in first_path:
                link = _out_info(path, node.info)
                link.type, link.linkname, link.size = tarfile.LNKTYPE, first_path[node.inode], 0
                w.addfile(link)
                continue
            first_path[node.inode] = path
            layer, member = tree.sources[node.inode]
            if layer not in opened:
                opened[layer] = stack.enter_context(tarfile.open(tars[layer], "r:"))
            info = _out_info(path, member)
            info.type = tarfile.REGTYPE
            w.addfile(info, opened[layer].extractfile(member))
