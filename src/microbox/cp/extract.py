"""An untrusted tar from a box, extracted into a host directory.

The box made the tar, so it may hold anything: absolute names, `..`, a symlink
to / followed by entries "inside" it, names that swap kinds half-way, hard
links to host files, headers that would take unbounded memory. The rules:

* Names: an absolute name, a `..` component, a NUL, a component longer than
  255 bytes, or a name outside the tar's top entry stops the copy (Refused).
* Paths are walked one component at a time with `os.open(O_NOFOLLOW |
  O_DIRECTORY, dir_fd=...)` from the destination's descriptor. A symlink or a
  file where a directory is needed stops the copy, even one this copy made.
* A regular file is written under a hidden temporary name beside it
  (`.NAME.microbox-cp-XXXXXXXX`, created with `O_CREAT | O_EXCL | O_NOFOLLOW`)
  and renamed to its name when whole, so no file is ever seen half-written
  under its name; an existing file or symlink is replaced by that rename (the
  link, never its target). Nothing ever replaces a directory, and nothing is
  opened for writing through a path.
* A directory top entry whose name is new is built under such a temporary name
  and renamed into place once its whole tree is written; into a directory that
  exists, the tar is merged, as `docker cp` does, each file landing whole.
* A symlink is made as a symlink with its target verbatim; the copy never
  follows it. A hard link becomes a copy of the file it names, if that is a
  regular file the copy can reach under its top entry; else the copy stops.
  Devices, fifos and sockets are left out and counted (report.skipped).
* Modes: setuid and setgid are always dropped (a guest-made binary never gains a
  privilege on the host); the sticky bit and the permission bits are kept.
  Ownership is set only when running as root. Directories get their mode and
  mtime once the stream has left them, so a read-only directory still takes its
  contents. A directory that existed before keeps its own mode and mtime.
* Memory: the tar is read as a stream; headers longer than HEADER_LIMIT, global
  PAX headers and sparse files are refused, and members are not remembered.

A copy that fails part-way removes nothing that existed before and leaves no
temporary name behind: a new directory tree is removed whole, a half-written
file is removed, and only the whole entries a merge made stay. Only a copy
killed outright (SIGKILL) can leave a temporary name, hidden and named after
what it was to become.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import shutil
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from microbox import failpoints
from microbox.agent.protocol import untrusted_text
from microbox.cp.report import CopyReport
from microbox.errors import AgentError, HostError, Refused

HEADER_LIMIT = 64 * 1024  # a PAX or GNU long-name header: PATH_MAX twice, with room
NAME_MAX = 255
COPY_CHUNK = 1 << 20
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SETID = stat.S_ISUID | stat.S_ISGID


@dataclass(frozen=True)
class Target:
    """Where a tar goes: its top entry becomes `name` inside the directory
    `parent` (an existing host path, the user's own, resolved normally); with
    `name` None the top entry is `parent` itself and only its contents are made."""

    parent: str
    name: str | None


def temp_name(name: str) -> str:
    """A hidden name beside `name` that says what it holds:
    `.NAME.microbox-cp-XXXXXXXX`, NAME shortened to fit in NAME_MAX bytes."""
    suffix = f".microbox-cp-{secrets.token_hex(4)}"
    room = NAME_MAX - 1 - len(suffix)
    return "." + os.fsdecode(os.fsencode(name)[:room]) + suffix


def _refuse(name: str, why: str) -> Refused:
    return Refused(f"the box sent an unsafe tar entry '{untrusted_text(name, 200)}' ({why}), "
                   "so the copy stopped with nothing written outside the destination")


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo whose parsing holds bounded memory, whatever the stream says."""

    def _proc_member(self, tf: tarfile.TarFile) -> Any:
        if self.type == tarfile.XGLTYPE:
            raise _refuse(self.name, "a global PAX header")
        if self.type in (tarfile.GNUTYPE_SPARSE,):
            raise _refuse(self.name, "a sparse file")
        if (self.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                          tarfile.GNUTYPE_LONGLINK) and self.size > HEADER_LIMIT):
            raise _refuse(self.name, f"a {self.size}-byte header")
        return super()._proc_member(tf)  # type: ignore[misc]

    def _proc_gnusparse_10(self, *args: Any) -> Any:
        raise _refuse(self.name, "a sparse file")


def components(name: str) -> tuple[str, ...]:
    """The components of a member's name; Refused for anything that could
    leave the directory it is extracted into."""
    if "\0" in name:
        raise _refuse(name, "a NUL byte")
    if name.startswith("/"):
        raise _refuse(name, "an absolute name")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(name, "a '..' component")
    for p in parts:
        if len(os.fsencode(p)) > NAME_MAX:
            raise _refuse(name, f"a component over {NAME_MAX} bytes")
    return parts


def extract(fileobj: io.RawIOBase | IO[bytes], place: Callable[[tarfile.TarInfo], Target],
            report: CopyReport) -> None:
    """Extract the tar read from `fileobj`. `place` gets its first member (the
    top entry) and says where the tar goes. Counts go to `report`."""
    try:
        _extract(fileobj, place, report)
    except tarfile.TarError as exc:
        raise AgentError(f"the box sent a malformed tar ({untrusted_text(str(exc), 200)}), "
                         "so the copy stopped") from None
    except RecursionError:
        raise Refused("the box sent a tar with too many chained headers, so the copy "
                      "stopped with nothing written outside the destination") from None


def _extract(fileobj: io.RawIOBase | IO[bytes], place: Callable[[tarfile.TarInfo], Target],
             report: CopyReport) -> None:
    with tarfile.open(fileobj=fileobj, mode="r|", tarinfo=_BoundedTarInfo,
                      encoding="utf-8", errors="surrogateescape") as tar:
        first = tar.next()
        if first is None:
            raise Refused("the box sent an empty tar; check that the path exists in the box")
        top = components(first.name)
        if len(top) > 1:
            raise _refuse(first.name, "the tar does not start with the copied path")
        target = place(first)
        if target.name is not None and components(target.name) != (target.name,):
            raise HostError(f"cannot copy to the name {target.name!r}; give a plain name")
        root = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            staged = (temp_name(target.name) if target.name is not None and first.isdir()
                      and not _exists(root, target.name) else None)
        except BaseException:
            os.close(root)
            raise
        writer = _Writer(root, top, target.name, staged, target.parent, report)
        try:
            member: tarfile.TarInfo | None = first
            while member is not None:
                writer.member(tar, member)
                del tar.members[:]  # type: ignore[attr-defined]  # no memory per member
                member = tar.next()
            writer.finish()
            writer.commit()
        except BaseException:
            writer.discard()
            raise
        finally:
            writer.close()


def _exists(parent: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


_Path = tuple[str, ...]


class _Writer:
    """Writes members under `root`: the top entry becomes `name`, built as
    `staged` (a temporary name) when given and renamed to `name` by commit."""

    def __init__(self, root: int, top: _Path, name: str | None, staged: str | None,
                 shown: str, report: CopyReport) -> None:
        self.root = root
        self.top = top
        self.name = name
        self.staged = staged
        self.prefix: _Path = (staged or name,) if name is not None else ()
        self.shown = shown
        self.report = report
        self.as_root = os.geteuid() == 0
        self.cached: tuple[_Path, int] | None = None  # the last parent walked to
        self.pending: list[tuple[_Path, tarfile.TarInfo]] = []  # new dirs still open

    # -- names -----------------------------------------------------------------

    def path(self, name: str) -> _Path:
        """Where member `name` goes, relative to the root descriptor."""
        parts = components(name)
        if parts[:len(self.top)] != self.top:
            raise _refuse(name, "outside the copied path")
        return self.prefix + parts[len(self.top):]

    def show(self, path: _Path) -> str:
        """`path` as the user will know it: under its final name, not the staged one."""
        if self.staged is not None and self.name is not None and path[:1] == (self.staged,):
            path = (self.name, *path[1:])
        return untrusted_text(os.path.join(self.shown, *path), 300)

    # -- walking ---------------------------------------------------------------

    def _enter(self, fd: int, part: str, path: _Path, create: bool) -> int:
        try:
            return os.open(part, _DIR, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # a file, or a symlink not followed
                raise Refused(f"{self.show(path)} is a symlink or a file where the box's tar "
                              "needs a directory, so the copy stopped without following it"
                              ) from None
            raise
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, 0o777, dir_fd=fd)  # a parent the tar did not list (umask applies)
        return self._enter(fd, part, path, create=False)

    def parent(self, path: _Path, create: bool = True) -> int:
        """A descriptor of the directory holding `path` (owned by the cache); its
        missing parents are made with `create`."""
        want = path[:-1]
        if self.cached is not None and self.cached[0] == want:
            return self.cached[1]
        fd = os.dup(self.root)
        try:
            for i, part in enumerate(want):
                nxt = self._enter(fd, part, want[:i + 1], create)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        self._drop_cache()
        self.cached = (want, fd)
        return fd

    def _drop_cache(self) -> None:
        if self.cached is not None:
            os.close(self.cached[1])
            self.cached = None

    def close(self) -> None:
        self._drop_cache()
        os.close(self.root)

    # -- the staged tree -------------------------------------------------------

    def commit(self) -> None:
        """Rename the staged tree to its name (the whole tree is written)."""
        if self.staged is None or self.name is None:
            return
        self._drop_cache()
        try:
            os.rename(self.staged, self.name, src_dir_fd=self.root, dst_dir_fd=self.root)
        except OSError as exc:
            raise HostError(f"cannot write {self.show((self.name,))}: "
                            f"{exc.strerror or exc}") from None
        self.staged = None

    def discard(self) -> None:
        """Remove the staged tree after a failure; nothing of it stays."""
        if self.staged is None:
            return
        self._drop_cache()
        with contextlib.suppress(OSError):
            remove_tree(self.root, self.staged)

    # -- members ---------------------------------------------------------------

    def member(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        path = self.path(m.name)
        if m.sparse is not None:
            raise _refuse(m.name, "a sparse file")
        self._leave(path)
        if not path:  # the top entry, mapped onto the destination itself
            if not m.isdir():
                raise _refuse(m.name, "it would replace the destination itself")
            return
        try:
            if m.isdir():
                self._dir(path, m)
            elif m.isreg():
                src = tar.extractfile(m)
                assert src is not None
                self._file(path, m, src)
                self.report.files += 1
                self.report.bytes += m.size
            elif m.issym():
                self._symlink(path, m)
            elif m.islnk():
                self._hardlink(path, m)
            else:
                self.report.skipped += 1
        except OSError as exc:
            raise HostError(f"cannot write {self.show(path)}: {exc.strerror or exc}") from None

    def _leave(self, path: _Path) -> None:
        """Finish the directories the stream has left (they are not prefixes of `path`)."""
        while self.pending and self.pending[-1][0] != path[:len(self.pending[-1][0])]:
            self._finish_dir(*self.pending.pop())

    def finish(self) -> None:
        while self.pending:
            self._finish_dir(*self.pending.pop())

    def _dir(self, path: _Path, m: tarfile.TarInfo) -> None:
        fd = self.parent(path)
        try:
            os.mkdir(path[-1], 0o700, dir_fd=fd)
        except FileExistsError:
            os.close(self._enter(fd, path[-1], path, create=False))  # a directory, not followed
            return  # it was there before (or made earlier): it keeps its mode and mtime
        self.report.dirs += 1
        self.pending.append((path, m))

    def _finish_dir(self, path: _Path, m: tarfile.TarInfo) -> None:
        parent = self.parent(path)
        fd = self._enter(parent, path[-1], path, create=False)
        try:
            self._meta(fd, m)
        finally:
            os.close(fd)

    def _meta(self, fd: int, m: tarfile.TarInfo) -> None:
        if self.as_root:
            os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, m.mode & 0o7777 & ~_SETID)
        _utime(m, fd)

    def _file(self, path: _Path, m: tarfile.TarInfo, src: IO[bytes]) -> None:
        """Write the file under a temporary name, then rename it to its own."""
        parent = self.parent(path)
        tmp = temp_name(path[-1])
        fd = os.open(tmp, _NEW, 0o600, dir_fd=parent)
        try:
            with open(fd, "wb", closefd=False) as out:
                out.write(src.read(COPY_CHUNK))
                out.flush()
                failpoints.reach("cp-out-partial")  # some bytes written, not all
                shutil.copyfileobj(src, out, COPY_CHUNK)
            self._meta(fd, m)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=parent)
            raise
        os.close(fd)
        self._replace(parent, tmp, path)

    def _replace(self, parent: int, tmp: str, path: _Path) -> None:
        """Rename `tmp` over the file or symlink at `path`; never over a directory."""
        try:
            os.rename(tmp, path[-1], src_dir_fd=parent, dst_dir_fd=parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=parent)
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise Refused(f"{self.show(path)} is a directory, and the box's tar has a "
                              "file there; move the directory away or copy elsewhere") from None
            raise

    def _symlink(self, path: _Path, m: tarfile.TarInfo) -> None:
        if not m.linkname or "\0" in m.linkname:
            raise _refuse(m.name, "a symlink with no target")
        parent = self.parent(path)
        try:
            os.symlink(m.linkname, path[-1], dir_fd=parent)
        except FileExistsError:
            tmp = temp_name(path[-1])
            os.symlink(m.linkname, tmp, dir_fd=parent)
            self._replace(parent, tmp, path)
        if self.as_root:
            os.chown(path[-1], m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
        _utime(m, path[-1], parent)
        self.report.symlinks += 1

    def _hardlink(self, path: _Path, m: tarfile.TarInfo) -> None:
        """A copy of the regular file the link names, read without following symlinks."""
        source = self.path(m.linkname)
        if not source:
            raise _refuse(m.name, "a hard link to the destination itself")
        parent = self.parent(source, create=False)
        try:
            fd = os.open(source[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=parent)
        except OSError:
            raise _refuse(m.name, "a hard link to no file of this copy") from None
        with open(fd, "rb") as src:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _refuse(m.name, "a hard link to something other than a file")
            self._file(path, m, src)
        self.report.hardlinks += 1


def remove_tree(parent: int, name: str) -> None:
    """Remove `name` in the directory `parent` and everything under it, never
    following a symlink. Iterative, holding two descriptors at a time, so a
    tree of any depth (the box chose it) goes."""
    try:
        fd = os.open(name, _DIR, dir_fd=parent)
    except OSError:  # not a directory (or gone)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent)
        return
    try:
        stack = [(name, _clear(fd))]  # each level's name and the directories left in it
        while stack:
            here, subdirs = stack[-1]
            if subdirs:
                sub = subdirs.pop()
                nxt = os.open(sub, _DIR, dir_fd=fd)
                os.close(fd)
                fd = nxt
                stack.append((sub, _clear(fd)))
                continue
            stack.pop()
            if not stack:
                break
            up = os.open("..", _DIR, dir_fd=fd)
            os.close(fd)
            fd = up
            os.rmdir(here, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def _clear(fd: int) -> list[str]:
    """Unlink every entry of the directory `fd` but its subdirectories; return those."""
    os.fchmod(fd, 0o700)  # a read-only directory must let its entries go
    subdirs = []
    for entry in os.listdir(fd):
        if stat.S_ISDIR(os.stat(entry, dir_fd=fd, follow_symlinks=False).st_mode):
            subdirs.append(entry)
        else:
            os.unlink(entry, dir_fd=fd)
    return subdirs


def mtime_ns(m: tarfile.TarInfo) -> int:
    """The member's mtime in nanoseconds: exact from a PAX record (the agent
    writes nanoseconds, which a float would round), else from the header."""
    text = m.pax_headers.get("mtime", "")
    sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text)
    sec, _, frac = digits.partition(".")
    if sec.isdigit() and (not frac or frac.isdigit()):
        return sign * (int(sec) * 1_000_000_000 + int((frac + "0" * 9)[:9]))
    return int(m.mtime * 1_000_000_000)


def _utime(m: tarfile.TarInfo, target: int | str, dir_fd: int | None = None) -> None:
    try:
        ns = mtime_ns(m)
        if isinstance(target, int):
            os.utime(target, ns=(ns, ns))
        else:
            os.utime(target, ns=(ns, ns), dir_fd=dir_fd, follow_symlinks=False)
    except (OverflowError, ValueError):
        pass  # an mtime the host cannot hold: the file keeps the time of the copy
