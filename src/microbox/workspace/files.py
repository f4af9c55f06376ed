"""The host side of a workspace: which files of a git repository go into a box,
and the tar stream that carries them (docs/workspace.md)."""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microbox.agent.protocol import wire
from microbox.errors import HostError, UsageError

GITLINK = "160000"  # a submodule's entry in the index: a commit, not a file


@dataclass(frozen=True)
class WorkspaceFile:
    """One file a push ships: its path from the repository's top level (bytes
    that are not UTF-8 as lone surrogates, as os.fsdecode gives them)."""

    path: str
    size: int
    mode: int  # st_mode, from lstat: a symbolic link is shipped as a link
    tracked: bool

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)

    def to_json(self) -> dict[str, Any]:
        return {"path": wire(self.path), "size": self.size,
                "mode": f"{stat.S_IMODE(self.mode):o}", "link": self.is_link,
                "tracked": self.tracked}


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the host's git in `repo` (never raises for its exit status)."""
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise HostError("git is not installed on this host", "apt-get install -y git",
                        "to install it") from None


def repo_root(path: str | Path) -> Path:
    """The top level of the git work tree that holds `path`."""
    where = Path(path).absolute()
    if not where.is_dir():
        raise UsageError(f"{where} is not a directory; give the path of a git repository")
    r = git(where, "rev-parse", "--show-toplevel")
    if r.returncode != 0 or not r.stdout.strip():
        raise UsageError(f"{where} is not in a git work tree; give the path of a git "
                         "repository (or run 'git init' there first)")
    return Path(os.fsdecode(r.stdout.rstrip(b"\n")))


def host_head(top: Path) -> tuple[str | None, str | None]:
    """The commit HEAD names (None before the first commit) and its branch (None
    when detached)."""
    commit = git(top, "rev-parse", "-q", "--verify", "HEAD^{commit}")
    branch = git(top, "symbolic-ref", "-q", "--short", "HEAD")
    return (commit.stdout.decode().strip() or None if commit.returncode == 0 else None,
            os.fsdecode(branch.stdout.strip()) or None if branch.returncode == 0 else None)


def _listed(top: Path, *args: str) -> list[bytes]:
    r = git(top, "ls-files", "-z", *args)
    if r.returncode != 0:
        message = r.stderr.decode(errors="replace").strip().splitlines()
        raise HostError(f"git ls-files failed in {top}: "
                        f"{message[-1] if message else f'exit {r.returncode}'}")
    return [entry for entry in r.stdout.split(b"\0") if entry]


def workspace_files(path: str | Path = ".", include_untracked: bool = False
                    ) -> list[WorkspaceFile]:
    """The files a push of the repository holding `path` ships, in git's order:
    every tracked file as it is now in the work tree (tracked files deleted
    there are left out, submodules too), and with include_untracked the
    untracked files git does not ignore. Needs no box."""
    top = repo_root(path)
    names: dict[str, bool] = {}
    for entry in _listed(top, "--cached", "--stage"):
        meta, _, raw = entry.partition(b"\t")
        if not meta.startswith(GITLINK.encode()):
            names.setdefault(os.fsdecode(raw), True)  # an unmerged path has several stages
    if include_untracked:
        for raw in _listed(top, "--others", "--exclude-standard"):
            if not raw.endswith(b"/"):  # a repository nested in this one
                names.setdefault(os.fsdecode(raw), False)
    found = []
    for name, tracked in names.items():
        try:
            st = os.lstat(top / name)
        except (FileNotFoundError, NotADirectoryError):
            continue  # deleted in the work tree: the push ships the tree as it is
        if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            found.append(WorkspaceFile(name, st.st_size, st.st_mode, tracked))
    return found


def write_tar(top: Path, files: list[WorkspaceFile], write: Callable[[bytes], object]) -> int:
    """Write a tar of `files` (read from `top`) to `write` in pieces of a few
    KiB; returns the bytes of file content shipped. Owners are root (the guest's
    tar extracts as whoever runs it); modes and mtimes are the host's."""
    sink = _Sink(write)
    total = 0
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tar:
        for f in files:
            full = top / f.path
            if f.is_link:
                info = tar.gettarinfo(full, arcname=f.path)
                _as_root(info)
                tar.addfile(info)
                continue
            try:
                fh = open(full, "rb")  # noqa: SIM115 - closed below, after addfile
            except FileNotFoundError:
                raise HostError(f"{full} disappeared while it was being pushed; "
                                "push again") from None
            with fh:
                info = tar.gettarinfo(arcname=f.path, fileobj=fh)  # its size, from fstat
                _as_root(info)
                if info.islnk():  # a hard link to a file already in the tar
                    tar.addfile(info)
                    continue
                if not info.isreg():
                    raise HostError(f"{full} stopped being a regular file while it was "
                                    "being pushed; push again")
                try:
                    tar.addfile(info, fh)
                except OSError as err:  # tarfile's "unexpected end of data": it shrank
                    raise HostError(f"{full} changed while it was being pushed ({err}); "
                                    "push again") from None
                total += info.size
    return total


def _as_root(info: tarfile.TarInfo) -> None:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"


class _Sink:
    """The file object tarfile writes its stream to (only write is used)."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self._written = 0

    def write(self, data: bytes) -> int:
        self._write(bytes(data))
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def read(self, size: int) -> bytes:
        raise OSError("a tar being written cannot be read")

    def seek(self, pos: int) -> int:
        raise OSError("a tar stream cannot seek")

    def close(self) -> None:
        pass
