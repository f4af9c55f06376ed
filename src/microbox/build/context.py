"""The build context: what COPY and ADD sources match in it, a hash of their
content for the build cache, and the tar stream that puts them in the image.

Docker's rules: a source is relative to the context (a leading `/` too); a
wildcard (`*`, `?`, `[...]`, one path component each) may match several; a
matched directory brings its *contents*, a file itself; a source that is a
symlink is followed, symlinks below a directory are copied as symlinks.
Paths left out by .dockerignore are not in the context. An empty match is an
error. Files keep their mode (unless --chmod) and their mtime; everything is
owned by 0:0 unless --chown. ADD (`extract=True`) unpacks a source file that
is a tar archive into the destination (archive.py).

Nothing is ever read outside the context directory: paths are walked one
component at a time from a descriptor of the context (O_NOFOLLOW), a `..` or
a symlink that leads out is refused, and a file is read from the descriptor
that was checked. The hash covers names, types, modes, link targets and bytes,
not mtimes or owners (Docker's cache ignores those too).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import stat
import tarfile
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from microbox.build import archive
from microbox.build.ignore import Ignore, has_magic, translate
from microbox.errors import UsageError

CHUNK = 1 << 20
MAX_LINKS = 40  # symlinks followed in one path, as Linux's ELOOP limit
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Match:
    """What one source matched: `path` relative to the context (symlinks
    resolved), a "dir" or a "file", and `name`, the last component as the
    source or the wildcard named it (a file is copied under that name)."""

    source: str
    path: str
    kind: str
    name: str


@dataclass(frozen=True)
class Entry:
    """One thing a match copies: `name` relative to the destination directory
    (a file match: its base name), `path` in the context."""

    path: str
    name: str
    kind: str  # "file", "dir" or "symlink"
    mode: int  # permission bits, setuid and friends included
    target: str = ""
    mtime: int = 0


class _Escape(Exception):
    """A path that leads outside the context."""


class Context:
    """A build context directory and its .dockerignore (None: the context's
    own `.dockerignore`, if any). Errors name `dockerfile`:`line` where the
    methods are given the line of the instruction."""

    def __init__(self, root: Path, ignore: Ignore | None = None, *,
                 dockerfile: str = "Dockerfile") -> None:
        self.root = Path(root)
        self.ignore = ignore if ignore is not None else Ignore.load(self.root)
        self.dockerfile = dockerfile
        self._roots = {str(self.root.absolute()), str(self.root.resolve())}

    @classmethod
    def open(cls, root: Path, dockerfile: Path | None = None) -> Context:
        """The context with the ignore file Docker would read for it (a
        `<Dockerfile>.dockerignore` next to the Dockerfile first)."""
        return cls(root, Ignore.load(root, dockerfile),
                   dockerfile=dockerfile.name if dockerfile else "Dockerfile")

    def _where(self, line: int | None, keyword: str) -> str:
        return f"{self.dockerfile}:{line}: {keyword}" if line else keyword

    # -- matching

    def match(self, sources: Sequence[str], *, line: int | None = None,
              keyword: str = "COPY") -> list[Match]:
        """Each source's matches, in order; no source may match nothing."""
        where = self._where(line, keyword)
        if not sources:
            raise UsageError(f"{where}: no source files were specified")
        out: list[Match] = []
        with self._fd() as root:
            for source in sources:
                found = self._match_one(root, source, where)
                if not found:
                    raise UsageError(f"{where}: {source!r} matches nothing in the build "
                                     f"context {self.root} (or .dockerignore leaves it out)")
                out += found
        return out

    def entries(self, match: Match) -> list[Entry]:
        """What `match` copies: a file itself, or a directory's contents (not
        the directory), parents before children, by name."""
        with self._fd() as root:
            if match.kind == "file":
                st = os.stat(match.path, dir_fd=root)
                return [Entry(match.path, match.name, "file",
                              stat.S_IMODE(st.st_mode), mtime=int(st.st_mtime))]
            out: list[Entry] = []
            fd = self._open_dir(root, match.path)
            try:
                self._walk(fd, match.path, "", out)
            finally:
                os.close(fd)
            return out

    def files(self, sources: Sequence[str], *, line: int | None = None,
              keyword: str = "COPY") -> list[str]:
        """The context paths of the files and symlinks the sources copy."""
        return [e.path for m in self.match(sources, line=line, keyword=keyword)
                for e in self.entries(m) if e.kind != "dir"]

    def _match_one(self, root: int, source: str, where: str) -> list[Match]:
        rel = posixpath.normpath("/" + source).lstrip("/") or "."
        if ".." in posixpath.normpath(source).split("/") and not source.startswith("/"):
            raise UsageError(f"{where}: {source!r} is outside the build context; a source "
                             "is a path inside the context directory")
        candidates = self._glob(root, rel) if has_magic(rel) else [rel]
        out = []
        for candidate in candidates:
            try:
                resolved = self._resolve(root, candidate)
            except _Escape as e:
                raise UsageError(f"{where}: {source!r} leads outside the build context "
                                 f"(symlink {e})") from None
            if resolved is None:
                continue
            path, kind = resolved
            if kind == "dir" and self.ignore.excluded(path) and not self._has_included(path):
                continue
            out.append(Match(source, path, kind, posixpath.basename(candidate)))
        return out

    def _glob(self, root: int, pattern: str) -> list[str]:
        """Context paths matching a wildcard, component by component (Go's
        filepath.Match: `*` stays within a component); no symlink is followed
        on the way."""
        paths = [""]
        for part in pattern.split("/"):
            if not has_magic(part):
                paths = [posixpath.join(p, part) for p in paths]
                continue
            regex = re.compile(translate(part, doublestar=False), re.S)
            found = []
            for parent in paths:
                try:
                    fd = self._open_dir(root, parent or ".")
                except OSError:
                    continue
                try:
                    names = sorted(os.listdir(fd))
                finally:
                    os.close(fd)
                found += [posixpath.join(parent, n) for n in names if regex.match(n)]
            paths = found
        return paths

    def _has_included(self, path: str) -> bool:
        """Whether an excluded directory still holds something a `!` pattern
        brings back (then it is in the context)."""
        if not self.ignore.may_include_under(path):
            return False
        with self._fd() as root:
            out: list[Entry] = []
            fd = self._open_dir(root, path)
            try:
                self._walk(fd, path, "", out)
            finally:
                os.close(fd)
            return bool(out)

    def _resolve(self, root: int, path: str) -> tuple[str, str] | None:
        """`path` with its symlinks followed inside the context: (real path,
        "dir" or "file"), or None if it is missing, excluded, or no file or
        directory. Raises _Escape for a way out."""
        todo = [p for p in path.split("/") if p not in ("", ".")]
        done: list[str] = []
        links = 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                if not done:
                    raise _Escape("..")
                done.pop()
                continue
            here = "/".join([*done, part])
            try:
                st = os.stat(here, dir_fd=root, follow_symlinks=False)
            except OSError:
                return None
            if not stat.S_ISLNK(st.st_mode):
                done.append(part)
                continue
            links += 1
            if links > MAX_LINKS or self.ignore.excluded(here):
                return None
            target = os.readlink(here, dir_fd=root)
            inside = self._inside(target) if target.startswith("/") else target
            parts = [p for p in (inside or "").split("/") if p not in ("", ".")]
            depth = 0 if target.startswith("/") else len(done)
            for p in parts:
                depth += -1 if p == ".." else 1
                if depth < 0:
                    break
            if inside is None or depth < 0:
                raise _Escape(f"{here} -> {target}")
            if target.startswith("/"):
                done = []
            todo = parts + todo
        real = "/".join(done) or "."
        st = os.stat(real, dir_fd=root, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            return real, "dir"
        if stat.S_ISREG(st.st_mode) and not self.ignore.excluded(real):
            return real, "file"
        return None

    def _inside(self, target: str) -> str | None:
        """An absolute link target as a path in the context, if it is one."""
        for root in self._roots:
            rel = posixpath.relpath(posixpath.normpath(target), root)
            if rel == "." or not rel.startswith(".."):
                return rel
        return None

    def _walk(self, fd: int, rel: str, name: str, out: list[Entry]) -> None:
        """Append what directory `fd` (context path `rel`) holds, as entries
        named below `name`; excluded paths are skipped, an excluded directory
        is kept only for what a `!` pattern brings back in it."""
        with os.scandir(fd) as it:
            children = sorted(it, key=lambda e: e.name)
        for child in children:
            path = posixpath.join(rel, child.name) if rel != "." else child.name
            child_name = posixpath.join(name, child.name) if name else child.name
            st = child.stat(follow_symlinks=False)
            excluded = self.ignore.excluded(path)
            entry = Entry(path, child_name, "", stat.S_IMODE(st.st_mode), mtime=int(st.st_mtime))
            if stat.S_ISDIR(st.st_mode):
                if excluded and not self.ignore.may_include_under(path):
                    continue
                below: list[Entry] = []
                sub = os.open(child.name, _DIR_FLAGS, dir_fd=fd)
                try:
                    self._walk(sub, path, child_name, below)
                finally:
                    os.close(sub)
                if not excluded or below:
                    out.append(_kind(entry, "dir"))
                    out += below
            elif excluded:
                continue
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(child.name, dir_fd=fd)
                out.append(Entry(path, child_name, "symlink", 0o777, target, entry.mtime))
            elif stat.S_ISREG(st.st_mode):
                out.append(_kind(entry, "file"))
            # sockets, fifos and devices are not copied

    # -- reading, safely

    @contextlib.contextmanager
    def _fd(self) -> Iterator[int]:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)

    def _open_dir(self, root: int, path: str) -> int:
        """A descriptor of a context directory, opened with no symlink followed."""
        fd = os.dup(root)
        try:
            for part in path.split("/"):
                if part in ("", "."):
                    continue
                if part == "..":
                    raise _Escape("..")
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def _open_file(self, path: str) -> Iterator[tuple[IO[bytes], os.stat_result]]:
        """A regular file of the context, opened with no symlink followed, and
        its stat from the open descriptor."""
        parent, _, name = path.rpartition("/")
        with self._fd() as root:
            dfd = self._open_dir(root, parent or ".")
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            finally:
                os.close(dfd)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise UsageError(f"{path} in the build context is no regular file")
            yield f, st

    # -- hashing and tar

    def hash_sources(self, sources: Sequence[str], *, line: int | None = None,
                     keyword: str = "COPY") -> str:
        """sha256 over what the sources copy: for each match its source and
        path, then each entry's name, type, mode, link target and bytes."""
        h = hashlib.sha256()
        for match in self.match(sources, line=line, keyword=keyword):
            h.update(_field("match", match.source, match.path, match.kind))
            for e in self.entries(match):
                h.update(_field(e.kind, e.name, f"{e.mode:o}", e.target))
                if e.kind == "file":
                    with self._open_file(e.path) as (f, _st):
                        digest = hashlib.sha256()
                        while chunk := f.read(CHUNK):
                            digest.update(chunk)
                    h.update(digest.digest())
        return "sha256:" + h.hexdigest()

    def write_tar(self, sources: Sequence[str], dest: str, out: IO[bytes], *,
                  chown: tuple[int, int] | None = None, chmod: int | None = None,
                  inline: Sequence[tuple[str, str]] = (), dest_is_dir: bool = False,
                  extract: bool = False, mtime: int | None = None, line: int | None = None,
                  keyword: str | None = None, existing: Collection[str] = ()) -> None:
        """Write a PAX tar stream of what COPY `sources` `dest` puts in the image:
        names relative to the image root, the destination's directories first
        (mode 0755; an extractor leaves existing ones as they are). `inline`
        are heredoc files (name, content), mode 0644; `dest_is_dir` says the
        destination is a directory in the image already; `extract` (ADD)
        unpacks sources that are tar archives into the destination; `existing`
        are directories (absolute) the image has already, whose entries are left
        out so that they keep their owner and mode."""
        keyword = keyword or ("ADD" if extract else "COPY")
        where = self._where(line, keyword)
        matches = self.match(sources, line=line, keyword=keyword) if sources or not inline \
            else []
        archives = {m.path: k for m in matches if extract and m.kind == "file"
                    and (k := self.archive_kind(m.path)) is not None}
        many = len(matches) + len(inline) > 1
        into = dest.endswith("/") or dest_is_dir
        if many and not into:
            raise UsageError(f"{where}: with more than one source the destination must "
                             f"be a directory ending in /, not {dest!r}")
        into = into or any(m.kind == "dir" or m.path in archives for m in matches)
        base = posixpath.normpath("/" + dest).strip("/")
        uid, gid = chown or (0, 0)
        now = int(time.time()) if mtime is None else mtime
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            top = base if into else posixpath.dirname(base)
            parts = top.split("/") if top else []
            for i in range(len(parts)):
                if "/" + "/".join(parts[:i + 1]) in existing:
                    continue  # the agent would reset its owner and mode
                tar.addfile(_info("/".join(parts[:i + 1]), tarfile.DIRTYPE, 0o755, uid, gid,
                                  now))
            for match in matches:
                if match.path in archives:
                    with self._open_file(match.path) as (f, _st):
                        archive.unpack(f, base, tar, chown=chown, chmod=chmod,
                                       name=match.path)
                    continue
                for e in self.entries(match):
                    self._add(tar, e, posixpath.join(base, e.name) if into else base,
                              chmod, uid, gid)
            for file_name, content in inline:
                data = content.encode("utf-8", "surrogateescape")
                name = posixpath.join(base, file_name) if into else base
                info = _info(name, tarfile.REGTYPE, 0o644 if chmod is None else chmod, uid,
                             gid, now)
                info.size = len(data)
                tar.addfile(info, _Bytes(data))

    def _add(self, tar: tarfile.TarFile, e: Entry, name: str, chmod: int | None, uid: int,
             gid: int) -> None:
        mode = e.mode if chmod is None or e.kind == "symlink" else chmod
        if e.kind == "file":
            with self._open_file(e.path) as (f, st):
                info = _info(name, tarfile.REGTYPE, mode, uid, gid, e.mtime)
                info.size = st.st_size
                tar.addfile(info, f)
            return
        info = _info(name, tarfile.DIRTYPE if e.kind == "dir" else tarfile.SYMTYPE, mode, uid,
                     gid, e.mtime)
        info.linkname = e.target
        tar.addfile(info)

    def archive_kind(self, path: str) -> str | None:
        """For ADD: "tar", "gzip", "bzip2" or "xz" if the context file `path` is
        a tar archive (compressed so), which ADD unpacks; None otherwise."""
        with self._open_file(path) as (f, _st):
            return archive.kind(f)


class _Bytes:
    """A read-only file over bytes (tarfile reads `size` from it)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        chunk, self.pos = self.data[self.pos:end], min(end, len(self.data))
        return chunk


def _kind(entry: Entry, kind: str) -> Entry:
    return Entry(entry.path, entry.name, kind, entry.mode, entry.target, entry.mtime)


def _field(*values: str) -> bytes:
    return b"".join(os.fsencode(v) + b"\0" for v in values) + b"\n"


def _info(name: str, kind: bytes, mode: int, uid: int, gid: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, mtime
    info.uname = info.gname = ""
    return info
