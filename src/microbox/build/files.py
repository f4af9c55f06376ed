"""COPY, ADD and WORKDIR: files into a build box, with Docker's rules.

Sources come from the build context (build/context.py: .dockerignore applied,
nothing outside the context read), from an earlier stage or another image
(`--from`: read out of a box over it), or from here-documents. Each becomes one
tar whose names are relative to `/` and whose owners and modes are final
(`--chown`, `--chmod`), extracted by the agent at `/`. A destination that is
a directory in the image (or ends in `/`) receives the sources inside it.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
import tarfile
import tempfile
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from microbox import passwd
from microbox.build.buildbox import BuildBox
from microbox.errors import AgentError, GuestNotFound, UsageError

if TYPE_CHECKING:
    from microbox.build.context import Context
    from microbox.build.model import Instruction

Origin = Callable[[], BuildBox]  # a box over what COPY --from reads

SPOOL = 8 << 20  # tars larger than this are spooled to disk


def _ids(box: BuildBox, chown: str | None) -> tuple[int, int] | None:
    """--chown USER[:GROUP] as numbers, names looked up in the image's
    /etc/passwd and /etc/group (Docker's rule: GROUP defaults to USER's own
    group when a name, to the same number when a number)."""
    if not chown:
        return None
    user, _, group = chown.partition(":")
    uid, gid = _lookup(box, "/etc/passwd", user, want_gid=True)
    if group:
        gid = _lookup(box, "/etc/group", group, want_gid=False)[0]
    return uid, gid


def _lookup(box: BuildBox, table: str, who: str, *, want_gid: bool) -> tuple[int, int]:
    if who.isdigit():
        return int(who), int(who)
    buf = io.BytesIO()
    with contextlib.suppress(AgentError):  # no such table: no such name
        box.box.get(table, buf, max_bytes=passwd.LIMIT)
    found = passwd.ids(buf.getvalue(), who, with_gid=want_gid)
    if found is None:
        raise UsageError(f"--chown names {who!r}, which {table} in the image does not list; "
                         "use a number or create it first")
    return found


def copy(ins: Instruction, box: BuildBox, context: Context, origin: Origin | None,
         path: str) -> None:
    """COPY or ADD: one tar of what the sources put in the image, put at /.
    `origin` starts a box over the `--from` stage or image; `path` names the
    Dockerfile in errors."""
    existing = _existing_dirs(box, ins.dest)
    into = ins.dest.endswith("/") or posixpath.normpath(ins.dest) in existing
    ids = _ids(box, ins.chown)
    with tempfile.SpooledTemporaryFile(SPOOL) as tar:
        if origin is not None:
            _from_tar(ins, origin, into, ids, tar, path)
        else:
            context.write_tar(ins.sources, ins.dest, tar, chown=ids, chmod=ins.chmod,
                                    inline=[(h.name, h.content) for h in ins.heredocs],
                                    dest_is_dir=into, extract=ins.add, line=ins.line,
                                    keyword=ins.keyword, existing=existing)
        tar.seek(0)
        box.put_tar(tar)


def _existing_dirs(box: BuildBox, dest: str) -> set[str]:
    """The directories on the way to `dest` (and `dest`) the image has, from
    the top down to the first one missing."""
    found: set[str] = set()
    path = ""
    for part in posixpath.normpath(dest).strip("/").split("/"):
        path += "/" + part
        if not box.box.is_dir(path):
            break
        found.add(path)
    return found


def _from_tar(ins: Instruction, origin: Origin, into: bool, ids: tuple[int, int] | None,
              out: IO[bytes], path: str) -> None:
    """COPY --from=STAGE|IMAGE: each source read out of a box over that stage's
    (or image's) disk, renamed under the destination."""
    if len(ins.sources) > 1 and not into:
        raise UsageError(f"{path}:{ins.line}: with more than one source the "
                         f"destination must be a directory ending in /, not {ins.dest!r}")
    src_box = origin()
    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for src in ins.sources:
                with tempfile.SpooledTemporaryFile(SPOOL) as got:
                    try:
                        src_box.get_tar("/" + src.lstrip("/"), got)
                    except GuestNotFound:
                        raise UsageError(f"{path}:{ins.line}: {src} is not in "
                                         f"{ins.flags.get('from')}") from None
                    got.seek(0)
                    _rename(got, ins.dest, into, ids, ins.chmod, tf)
    finally:
        src_box.close()


def _rename(got: IO[bytes], dest: str, into: bool, ids: tuple[int, int] | None,
            chmod: int | None, tf: tarfile.TarFile) -> None:
    """Members of a `docker cp`-style tar (top entry: the source's base name)
    placed at `dest`: a directory's contents go into it, a file into it or as it.
    The agent makes missing parent directories (0755, root)."""
    with tarfile.open(fileobj=got, mode="r|") as src_tar:
        for member in src_tar:
            top, _, rest = member.name.partition("/")
            if member.isdir() and not rest:  # the source directory itself
                if into:
                    continue  # an existing destination keeps its mode and owner
                name = dest.rstrip("/")
            elif rest:
                name = posixpath.join(dest, rest)
            else:
                name = posixpath.join(dest, top) if into else dest.rstrip("/")
            member.name = name.lstrip("/") or "."
            if ids is not None:
                member.uid, member.gid = ids
                member.uname = member.gname = ""
            if chmod is not None and not member.issym():
                member.mode = chmod
            if member.islnk():
                _, _, linked = member.linkname.partition("/")
                member.linkname = posixpath.join(dest, linked).lstrip("/")
            data = src_tar.extractfile(member) if member.isreg() else None
            tf.addfile(member, data)


def make_dir(box: BuildBox, path: str) -> None:
    """WORKDIR: make `path` and its missing parents (0755, root), as Docker does."""
    missing: list[str] = []
    p = posixpath.normpath(path)
    while p != "/" and not box.box.is_dir(p):
        missing.append(p)
        p = posixpath.dirname(p)
    if not missing:
        return
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in reversed(missing):
            info = tarfile.TarInfo(d.lstrip("/"))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
            tf.addfile(info)
    buf.seek(0)
    box.put_tar(buf)
