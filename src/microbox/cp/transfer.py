"""Docker's `cp` rules, both ways, over the agent's tar transport.

The destination decides the shape, as with `docker cp`:

* an existing directory: the source goes into it, under its own name;
* a missing path (whose parent exists): the source is copied as that name;
* an existing file: a file replaces it; a directory onto it is an error;
* a source ending in `/.` copies a directory's contents, not the directory;
* a destination ending in `/` must be a directory, unless a directory is copied
  there (then it is made).

Box paths are taken from / when relative, as Docker does.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO

from microbox.agent import bulk as transport
from microbox.agent import ops
from microbox.agent.channel import Channel
from microbox.agent.protocol import Capability
from microbox.cp.chunks import CHUNK, ChunkReader
from microbox.cp.extract import Target, extract
from microbox.cp.report import CopyReport
from microbox.cp.tarwrite import end_of_archive, tree_tar
from microbox.errors import AgentError, GuestNotFound, NotFound, UsageError


def guest_path(path: str) -> tuple[str, bool]:
    """(the absolute, normalised box path, whether it asks for a directory's
    contents: a trailing `/.`, or / itself)."""
    contents = path == "." or path.endswith("/.")
    norm = posixpath.normpath("/" + path.lstrip("/"))
    return norm, contents or norm == "/"


def _host_path(path: str) -> tuple[str, bool]:
    contents = path == "." or path.endswith("/.")
    norm = os.path.abspath(path)
    return norm, contents or norm == "/"


# -- out of the box ---------------------------------------------------------------


def copy_out(channel: Channel, box: str, src: str, dest: str) -> CopyReport:
    """Copy the box path `src` to the host path `dest` (Docker's rules); the
    box's tar is extracted with microbox.cp.extract's rules. What lands under a
    new name lands whole (a temporary name, then a rename): a file, or a
    directory tree; into a directory of that name that exists already, the
    tree is merged as Docker merges it, each file whole."""
    path, contents = guest_path(src)
    report = CopyReport()
    place = functools.partial(_host_target, path, posixpath.basename(path), contents, dest)
    try:
        with contextlib.closing(ChunkReader(transport.tar_get(channel, path))) as reader:
            extract(reader, place, report)
    except GuestNotFound:
        raise _no_guest_path(box, path) from None
    return report


def _host_target(src: str, name: str, contents: bool, dest: str,
                 top: tarfile.TarInfo) -> Target:
    is_dir = top.isdir()
    if contents and not is_dir:
        raise UsageError(f"{src} is not a directory in the box, so it has no contents to "
                         "copy; drop the trailing '/.'")
    full = os.path.abspath(dest)
    try:
        st = os.stat(dest)
    except FileNotFoundError:
        if dest.endswith("/") and not is_dir:
            raise NotFound(f"the directory {dest} does not exist", f"mkdir -p {dest}") from None
        parent = os.path.dirname(full)
        if not os.path.isdir(parent):
            raise NotFound(f"the directory {parent} does not exist",
                           f"mkdir -p {parent}") from None
        return Target(parent, os.path.basename(full))
    except NotADirectoryError:
        raise UsageError(f"{dest} is not a directory; drop the trailing '/' or give one"
                         ) from None
    if stat.S_ISDIR(st.st_mode):
        return Target(dest, None if contents else name)
    if is_dir:
        raise UsageError(f"cannot copy the directory {src} onto the file {dest}; "
                         "give a directory or a new name")
    return Target(os.path.dirname(full), os.path.basename(full))


def copy_out_tar(channel: Channel, box: str, src: str, out: IO[bytes]) -> CopyReport:
    """Write the box's tar of `src` to `out` unchanged (top entry: the path's base
    name). It is the guest's tar: whoever extracts it must treat it as untrusted."""
    path, _ = guest_path(src)
    report = CopyReport()
    try:
        with contextlib.closing(ChunkReader(transport.tar_get(channel, path))) as reader:
            shutil.copyfileobj(reader, out, CHUNK)
            report.bytes = reader.count
    except GuestNotFound:
        raise _no_guest_path(box, path) from None
    out.flush()
    return report


def export_root(channel: Channel, box: str, out: IO[bytes],
                warn: Callable[[str], None]) -> CopyReport:
    """Write the tar of the box's root file system to `out` (`docker export`): the
    agent's walk of / stays on the root disk, so /proc, /sys, /dev, /tmp, /run and
    any other mount point are empty directories; owners, modes, mtimes, symlinks,
    devices, and (from an agent that lists `tar_export`) hard links and extended
    attributes are kept. Names start with `./`. The tar is the box's: extract it
    as untrusted input."""
    if not channel.hello.supports(Capability.TAR_EXPORT):
        warn(f"the agent of box '{box}' predates exports: hard links come out as copies "
             f"and extended attributes are left out; 'microbox restart {box}' gets the "
             "new agent")
    report = CopyReport()
    with contextlib.closing(ChunkReader(transport.tar_get(channel, "/", export=True))) as reader:
        shutil.copyfileobj(reader, out, CHUNK)
        report.bytes = reader.count
    out.flush()
    return report


# -- into the box -----------------------------------------------------------------


def copy_in(channel: Channel, box: str, src: str, dest: str) -> CopyReport:
    """Copy the host path `src` (a symlink is copied as one) to the box path
    `dest` (Docker's rules)."""
    local, contents = _host_path(src)
    try:
        st = os.stat(local) if contents else os.lstat(local)
    except FileNotFoundError:
        raise NotFound(f"{src} does not exist on this host") from None
    is_dir = stat.S_ISDIR(st.st_mode)
    if contents and not is_dir:
        raise UsageError(f"{src} is not a directory, so it has no contents to copy; "
                         "drop the trailing '/.'")
    path, _ = guest_path(dest)
    report = CopyReport()
    if is_guest_dir(channel, path):
        name = None if contents else os.path.basename(local)
        transport.tar_put(channel, path, tree_tar(local, name, report))
        return report
    if (dest.endswith("/") or dest.endswith("/.")) and not is_dir:
        raise _no_guest_dir(box, path)
    if is_dir and _guest_exists(channel, path):
        raise UsageError(f"cannot copy the directory {src} onto the file {path} in box "
                         f"'{box}'; give a directory or a new name")
    parent = posixpath.dirname(path)
    try:
        transport.tar_put(channel, parent, tree_tar(local, posixpath.basename(path), report))
    except GuestNotFound:
        raise _no_guest_dir(box, parent) from None
    return report


def copy_in_tar(channel: Channel, box: str, chunks: Iterable[bytes], dest: str
                ) -> CopyReport:
    """Extract the tar `chunks` (trusted: the caller's own) into the existing box
    directory `dest`."""
    path, _ = guest_path(dest)
    report = CopyReport()

    def counted() -> Iterator[bytes]:
        for chunk in chunks:
            report.bytes += len(chunk)
            yield chunk

    try:
        transport.tar_put(channel, path, counted())
    except GuestNotFound:
        raise _no_guest_dir(box, path) from None
    return report


def _no_guest_path(box: str, path: str) -> NotFound:
    return NotFound(f"{path} does not exist in box '{box}'",
                    f"microbox exec {box} -- ls -la {posixpath.dirname(path)}",
                    "to see what is there")


def _no_guest_dir(box: str, path: str) -> NotFound:
    return NotFound(f"there is no directory {path} in box '{box}'",
                    f"microbox exec {box} -- mkdir -p {path}", "to make it")


def is_guest_dir(channel: Channel, path: str) -> bool:
    """Whether `path` is a directory in the box: an empty tar extracts into one.
    Missing is not_found, a file `invalid`; any other failure (an old agent, a
    lost box) comes back from the real copy that follows, with its own words."""
    try:
        transport.tar_put(channel, path, [end_of_archive()])
    except AgentError:
        return False
    return True


class _Found(Exception):
    pass


class _Stop(io.RawIOBase):
    """A sink that ends a GET at its first byte: only existence was asked."""

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        raise _Found


def _guest_exists(channel: Channel, path: str) -> bool:
    """Whether anything is at `path` in the box (asked of a path that is no directory)."""
    try:
        ops.get_file(channel, path, _Stop())  # type: ignore[arg-type]
    except _Found:
        return True
    except GuestNotFound:
        return False
    except AgentError:
        return True  # a directory or a device: something is there
    return True
