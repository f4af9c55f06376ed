"""ADD's local archives: a source file that is a tar archive (plain, gzip,
bzip2 or xz, told by its content as Docker does, not by its name) is unpacked
into the destination instead of copied.

The archive's members are re-rooted under the destination; a member whose
path (or hard link target) would leave it is refused, as Docker refuses a
"breakout". Modes, mtimes and link targets are kept; owners too, unless
--chown gives them.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import posixpath
import tarfile
from typing import IO

from microbox.errors import UsageError

COMPRESSIONS = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))


def kind(f: IO[bytes]) -> str | None:
    """"tar", "gzip", "bzip2" or "xz" if the file (read from its start, then
    rewound) is a tar archive so compressed; None otherwise."""
    head = f.read(6)
    f.seek(0)
    found = next((k for magic, k in COMPRESSIONS if head.startswith(magic)), "tar")
    try:
        tarfile.TarInfo.frombuf(_first_block(found, f), "utf-8", "surrogateescape")
    except (OSError, EOFError, lzma.LZMAError, tarfile.TarError):
        return None
    finally:
        f.seek(0)
    return found


def _first_block(found: str, f: IO[bytes]) -> bytes:
    """The first tar block of a file compressed as `found` (or not: "tar")."""
    if found == "gzip":
        with gzip.GzipFile(fileobj=f) as z:
            return z.read(tarfile.BLOCKSIZE)
    if found == "bzip2":
        with bz2.BZ2File(f) as b:
            return b.read(tarfile.BLOCKSIZE)
    if found == "xz":
        with lzma.LZMAFile(f) as x:
            return x.read(tarfile.BLOCKSIZE)
    return f.read(tarfile.BLOCKSIZE)


def unpack(f: IO[bytes], base: str, out: tarfile.TarFile, *, chown: tuple[int, int] | None,
           chmod: int | None, name: str) -> None:
    """Add the members of archive `f` to `out`, under `base` (a path relative
    to the image root). `name` names the archive in errors."""
    try:
        with tarfile.open(fileobj=f, mode="r|*") as archive:
            for member in archive:
                if not posixpath.normpath("/" + member.name).strip("/"):
                    continue  # "./": the destination keeps its own mode and owner
                member.name = _inside(base, member.name, name)
                if member.islnk():
                    member.linkname = _inside(base, member.linkname, name)
                if chown is not None:
                    member.uid, member.gid = chown
                    member.uname = member.gname = ""
                if chmod is not None and (member.isreg() or member.isdir()):
                    member.mode = chmod
                data = archive.extractfile(member) if member.isreg() else None
                out.addfile(member, data)
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError) as e:
        raise UsageError(f"ADD: the archive {name} cannot be read ({e})") from None


def _inside(base: str, path: str, name: str) -> str:
    """A member path re-rooted under `base`, refused if it climbs out."""
    if posixpath.normpath(path).split("/")[0] == "..":
        raise UsageError(f"ADD: the archive {name} holds {path!r}, which leads outside "
                         "the destination")
    return posixpath.join(base, posixpath.normpath("/" + path).lstrip("/"))
