"""The host side of a workspace: which files of a git repository go into a box
(docs/workspace.md; cp/tarwrite.py makes the tar that carries them)."""

from __future__ import annotations

import os
import stat
import subprocess
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
