"""A host tree, or a list of files in one, as a PAX tar streamed in bounded
memory (what `cp` and `workspace push` send in).

The tree is walked through directory descriptors without following symlinks:
a symlink is sent as a symlink, a hard link as one more copy of its file, and a
device, fifo or socket is left out (counted in the report). Entries are owned
by root in the tar (uid and gid 0), as `docker cp` makes them.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator

from microbox.cp.chunks import CHUNK, coalesce
from microbox.cp.report import CopyReport
from microbox.errors import HostError

_BLOCK = tarfile.BLOCKSIZE
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def tree_tar(src: str, name: str | None, report: CopyReport) -> Iterator[bytes]:
    """The tar of the host path `src` (not followed if it is a symlink), its top
    entry named `name`; with `name` None, `src` must be a directory (followed) and
    the tar holds its contents only. Counts go to `report`."""
    return coalesce(_entries(src, name, report), CHUNK)


def files_tar(top: str, names: Iterable[str], report: CopyReport,
              owner: tuple[int, int] = (0, 0)) -> Iterator[bytes]:
    """The tar of the entries `names` ('/'-separated paths relative to the
    directory `top`: a file list, say git's), each reached from `top` one
    directory at a time without following a symlink, owned by `owner` (uid,
    gid). A directory among them is sent without its contents; the receiver
    makes missing parents."""
    return coalesce(_listed(top, names, report, owner), CHUNK)


def _listed(top: str, names: Iterable[str], report: CopyReport,
            owner: tuple[int, int]) -> Iterator[bytes]:
    root = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in names:
            *dirs, leaf = name.split("/")
            parent = os.dup(root)
            try:
                for d in dirs:
                    try:
                        sub = os.open(d, _DIR_FLAGS, dir_fd=parent)
                    except OSError as err:
                        raise _unreachable(top, name, parent, d, err) from None
                    os.close(parent)
                    parent = sub
                try:
                    st = os.lstat(leaf, dir_fd=parent)
                except OSError as err:
                    raise _unreachable(top, name, parent, leaf, err) from None
                yield from _member(parent, leaf, name, st, report, owner)
            finally:
                os.close(parent)
    finally:
        os.close(root)
    yield end_of_archive()


def _unreachable(top: str, name: str, parent: int, part: str, err: OSError) -> Exception:
    """Why `name` cannot be read: a component is a symlink (not followed), or it
    is gone; other errors as they are."""
    path = os.path.join(top, name)
    with contextlib.suppress(OSError):
        if stat.S_ISLNK(os.lstat(part, dir_fd=parent).st_mode):
            return HostError(f"{path} is reached through a symbolic link, which is not "
                             "followed")
    if isinstance(err, (FileNotFoundError, NotADirectoryError)):
        return HostError(f"{path} disappeared while it was being sent; try again once "
                         "nothing changes it")
    return err


def end_of_archive() -> bytes:
    return b"\0" * (2 * _BLOCK)


def _entries(src: str, name: str | None, report: CopyReport) -> Iterator[bytes]:
    if name is None:
        top = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        yield from _tree(top, "", report)
    else:
        st = os.lstat(src)
        parent = os.open(os.path.dirname(os.path.abspath(src)) or "/",
                         os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            leaf = os.path.basename(os.path.abspath(src))
            if not leaf:  # "/" itself
                yield from _member(None, ".", name, os.stat(src), report)
                yield from _tree(os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC),
                                 name + "/", report)
            else:
                yield from _member(parent, leaf, name, st, report)
                if stat.S_ISDIR(st.st_mode):
                    yield from _tree(os.open(leaf, _DIR_FLAGS, dir_fd=parent), name + "/",
                                     report)
        finally:
            os.close(parent)
    yield end_of_archive()


def _tree(top: int, prefix: str, report: CopyReport) -> Iterator[bytes]:
    """Every entry under the directory `top` (which this closes), depth first,
    a directory before its contents. One descriptor per level is open."""
    stack: list[tuple[int, Iterator[os.DirEntry[str]], str]] = []
    try:
        stack.append((top, os.scandir(top), prefix))
        while stack:
            fd, entries, base = stack[-1]
            entry = next(entries, None)
            if entry is None:
                _close(stack.pop())
                continue
            st = entry.stat(follow_symlinks=False)
            arcname = base + entry.name
            yield from _member(fd, entry.name, arcname, st, report)
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                stack.append((sub, os.scandir(sub), arcname + "/"))
    finally:
        while stack:
            _close(stack.pop())


def _close(level: tuple[int, Iterator[os.DirEntry[str]], str]) -> None:
    fd, entries, _ = level
    with contextlib.suppress(OSError):
        entries.close()  # type: ignore[attr-defined]  # a ScandirIterator
    os.close(fd)


def _member(dir_fd: int | None, leaf: str, arcname: str, st: os.stat_result,
            report: CopyReport, owner: tuple[int, int] = (0, 0)) -> Iterator[bytes]:
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    _mtime(info, st)
    info.uid, info.gid = owner
    info.uname = info.gname = ""
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        report.dirs += 1
        yield _header(info)
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(leaf, dir_fd=dir_fd)
        report.symlinks += 1
        yield _header(info)
    elif stat.S_ISREG(st.st_mode):
        yield from _file(dir_fd, leaf, info, report)
    else:
        report.skipped += 1


def _file(dir_fd: int | None, leaf: str, info: tarfile.TarInfo,
          report: CopyReport) -> Iterator[bytes]:
    fd = os.open(leaf, _FILE_FLAGS, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped while the tree was read
            report.skipped += 1
            return
        info.type = tarfile.REGTYPE
        info.size = st.st_size
        info.mode = stat.S_IMODE(st.st_mode)
        _mtime(info, st)
        yield _header(info)
        left = st.st_size
        while left > 0:
            data = os.read(fd, min(CHUNK, left))
            if not data:
                raise HostError(f"{info.name} shrank while it was being copied; "
                                "copy it again once nothing writes to it")
            left -= len(data)
            yield data
        if st.st_size % _BLOCK:
            yield b"\0" * (_BLOCK - st.st_size % _BLOCK)
        report.files += 1
        report.bytes += st.st_size
    finally:
        os.close(fd)


def _mtime(info: tarfile.TarInfo, st: os.stat_result) -> None:
    """The mtime to the nanosecond, in a PAX record (the header holds seconds)."""
    sec, ns = divmod(st.st_mtime_ns, 1_000_000_000)
    info.mtime = sec
    info.pax_headers = {"mtime": f"{sec}.{ns:09d}" if ns else str(sec)}


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
