"""The guest side of a workspace: push a repository's files into a box and
commit them as the base, export what changed since as a patch. The files go
in as a tar over TAR_PUT (as `cp` sends trees); every other step is an exec of
git with an argv list, paths on stdin, NUL-separated (docs/workspace.md)."""

from __future__ import annotations

import contextlib
import posixpath
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from microbox.agent.protocol import untrusted_text, wire
from microbox.cp.report import CopyReport
from microbox.cp.tarwrite import files_tar
from microbox.errors import (
    ExecFailed,
    GuestRefused,
    ImageLacks,
    MicroboxError,
    StateError,
    UsageError,
    WorkspaceError,
)
from microbox.execution import Result
from microbox.workspace.files import WorkspaceFile, host_head, repo_root, workspace_files
from microbox.workspace.names import BASE_REF, DEFAULT_DEST


class Box(Protocol):
    """What of a box (microbox.sdk.Box) a workspace uses: its name, a command
    run to completion, a tar streamed in."""

    @property
    def name(self) -> str: ...

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            env: dict[str, str] | None = None) -> Result: ...

    def copy_in_tar(self, tar: Iterable[bytes], dest: str) -> CopyReport: ...

IDENTITY = ("-c", "user.name=microbox", "-c", "user.email=microbox@localhost")
# Whatever the image's or its user's git config says, these commands read and
# write the same bytes: no CRLF conversion, no quoting, patches git apply takes.
STABLE = ("-c", "core.autocrlf=false", "-c", "core.safecrlf=false", "-c", "core.quotePath=false",
          "-c", "core.fileMode=true", "-c", "core.symlinks=true", "-c", "diff.noprefix=false",
          "-c", "diff.mnemonicPrefix=false", "-c", "diff.suppressBlankEmpty=false")
ENV = {"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0",
       "GIT_LITERAL_PATHSPECS": "1"}
PATCH = ("diff", "--binary", "--full-index", "--no-renames", "--no-ext-diff", "--no-textconv",
         "--no-color", "--src-prefix=a/", "--dst-prefix=b/")


@dataclass(frozen=True)
class WorkspacePush:
    """What a push did."""

    box: str
    dest: str
    files: int
    bytes: int  # file content shipped
    base: str  # the base commit in the guest (refs/microbox/base)
    previous: str | None  # the base it replaced
    removed: int  # files of the previous base no longer shipped, deleted in the guest
    host_commit: str | None  # the host's HEAD (None before its first commit)
    head: str  # the guest's HEAD afterwards: "refs/heads/NAME" or "detached"

    def to_json(self) -> dict[str, Any]:
        return {"box": self.box, "dest": wire(self.dest), "files": self.files,
                "bytes": self.bytes, "base": self.base, "previous": self.previous,
                "removed": self.removed, "host_commit": self.host_commit, "head": self.head}


def check_dest(dest: str) -> str:
    """`dest` made canonical: an absolute guest path other than /."""
    clean = posixpath.normpath(dest) if dest else ""
    if not clean.startswith("/") or clean in ("/", "//"):
        raise UsageError(f"workspace destination {dest!r} is not an absolute path below /; "
                         f"give one such as {DEFAULT_DEST}")
    return clean


def _nul(paths: Sequence[str]) -> bytes:
    return b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in paths)


def _names(out: bytes) -> list[str]:
    return [n.decode("utf-8", "surrogateescape") for n in out.split(b"\0") if n]


def _lacks(box: Box, program: str) -> ImageLacks:
    return ImageLacks(f"box '{box.name}' has no {program}, and workspaces need an image with "
                      "git, such as debian")


def _failed(box: Box, what: str, r: Result) -> WorkspaceError:
    """The command's last line on stderr (git's "fatal: ...")."""
    lines = [ln for ln in r.stderr.decode(errors="replace").splitlines() if ln.strip()]
    why = untrusted_text(lines[-1].strip(), 300) if lines else f"exit status {r.exit_code}"
    return WorkspaceError(f"{what} failed in box '{box.name}': {why}")


def _run(box: Box, argv: list[str], *, input: bytes | None = None,
         env: dict[str, str] | None = None) -> Result:
    try:
        return box.run(argv, input=input, env={**ENV, **(env or {})})
    except ExecFailed as err:
        if err.kind == "not_found":
            raise _lacks(box, argv[0]) from None
        raise


def _git(box: Box, dest: str, *args: str, input: bytes | None = None,
         env: dict[str, str] | None = None, codes: tuple[int, ...] = (0,)) -> Result:
    r = _run(box, ["git", "-C", dest, *STABLE, *args], input=input, env=env)
    if r.exit_code not in codes:
        verb = next((a for a in args if not a.startswith("-") and "=" not in a), "")
        raise _failed(box, f"git {verb}", r)
    return r


def _rev(box: Box, dest: str, ref: str) -> str | None:
    """The commit `ref` names in the guest repo, None if none (or no repo)."""
    r = _git(box, dest, "rev-parse", "-q", "--verify", f"{ref}^{{commit}}",
             codes=(0, 1, 128))
    return r.stdout.decode().strip() or None if r.exit_code == 0 else None


# -- push ----------------------------------------------------------------------

def push(box: Box, path: str | Path = ".", dest: str = DEFAULT_DEST,
         include_untracked: bool = False) -> WorkspacePush:
    """Ship the repository holding `path` (its whole work tree, see
    workspace_files) into `dest` in the box and commit it there as the base."""
    dest = check_dest(dest)
    top = repo_root(path)
    files = workspace_files(top, include_untracked)
    host_commit, host_branch = host_head(top)
    init = _run(box, ["git", *STABLE, "init", "-q", "--", dest])  # safe on a repo already there
    if init.exit_code != 0:
        raise _failed(box, "git init", init)
    previous = _rev(box, dest, BASE_REF)
    removed = _remove_gone(box, dest, previous, {f.path for f in files})
    shipped = _extract(box, dest, top, files)
    # The index becomes exactly the shipped files, ignored or not, with their stat data.
    _git(box, dest, "read-tree", "--empty")
    _git(box, dest, "update-index", "--add", "-z", "--stdin", input=_nul([f.path for f in files]))
    tree = _git(box, dest, "write-tree").stdout.decode().strip()
    message = _message(host_commit, host_branch, include_untracked)
    parents = ("-p", previous) if previous else ()
    base = _git(box, dest, *IDENTITY, "commit-tree", "--no-gpg-sign", *parents, "-m", message,
                tree).stdout.decode().strip()
    _git(box, dest, "update-ref", "-m", "microbox workspace push", BASE_REF, base,
         previous or "")
    head = _move_head(box, dest, previous, base)
    return WorkspacePush(box.name, dest, len(files), shipped, base, previous, removed,
                         host_commit, head)


def _remove_gone(box: Box, dest: str, previous: str | None, shipped: set[str]) -> int:
    """Delete the files of the previous base that this push does not ship (and
    directories left empty), before the tar could trip over them."""
    if previous is None:
        return 0
    old = _names(_git(box, dest, "ls-tree", "-r", "-z", "--name-only", previous).stdout)
    gone = [p for p in old if p not in shipped]
    if gone:
        _git(box, dest, "read-tree", previous)  # git rm removes what the index holds
        _git(box, dest, "rm", "-q", "-r", "-f", "--ignore-unmatch", "--pathspec-from-file=-",
             "--pathspec-file-nul", input=_nul(gone))
    return len(gone)


def _extract(box: Box, dest: str, top: Path, files: list[WorkspaceFile]) -> int:
    """Stream the tar of `files` into `dest` in the box (TAR_PUT, as `cp` does);
    the bytes of file content shipped."""
    report = CopyReport()
    tar = files_tar(str(top), [f.path for f in files], report, _owner(box))
    try:
        box.copy_in_tar(tar, dest)
    except GuestRefused as err:  # what the box made is in the way of a pushed file
        raise WorkspaceError(f"{err.message.rstrip('.')}; move it aside in the box (or "
                             "'microbox workspace export' first), then push again") from None
    return report.bytes


def _owner(box: Box) -> tuple[int, int]:
    """The uid and gid the box's commands run as (its --user, else its image's
    user, else root): the owner the pushed files get, as git init's were."""
    r = _run(box, ["sh", "-c", "id -u && id -g"])
    ids = r.stdout.split()
    if r.exit_code != 0 or len(ids) != 2 or not all(i.isdigit() for i in ids):
        raise _failed(box, "id", r)
    return int(ids[0]), int(ids[1])


def _message(commit: str | None, branch: str | None, untracked: bool) -> str:
    what = (f"host commit {commit}" + (f" ({branch})" if branch else "") if commit
            else "a host repository with no commits yet")
    body = ("The host's work tree as it was pushed: tracked files, uncommitted changes "
            "included" + ("; untracked files not ignored by git included." if untracked
                          else "."))
    return f"microbox workspace: {what}\n\n{body}\n"


def _move_head(box: Box, dest: str, previous: str | None, base: str) -> str:
    """The branch HEAD is on follows the base when it has no commits of its own
    since the last push (or no commits at all); otherwise HEAD is detached at
    the base and the branch keeps the guest's commits."""
    sym = _git(box, dest, "symbolic-ref", "-q", "HEAD", codes=(0, 1))
    branch = sym.stdout.decode("utf-8", "surrogateescape").strip() if sym.exit_code == 0 else ""
    head = _rev(box, dest, "HEAD")
    if branch and head in (None, previous):
        _git(box, dest, "update-ref", "-m", "microbox workspace push", branch, base, head or "")
        return branch
    _git(box, dest, "update-ref", "--no-deref", "-m", "microbox workspace push", "HEAD", base)
    return "detached"


# -- export --------------------------------------------------------------------

def export(box: Box, dest: str = DEFAULT_DEST) -> bytes:
    """A binary patch from the base to everything in `dest` now: the guest's
    commits, staged and unstaged changes and new files not ignored (what `git
    add -A` would record), for `git apply` at the top of the host repository.
    The guest repo's HEAD, branches, index and work tree are left as they were:
    the tree is built in a temporary index in /tmp."""
    dest = check_dest(dest)
    base = _rev(box, dest, BASE_REF)
    if base is None:
        _run(box, ["git", "--version"])  # no git at all says so first
        push_cmd = f"microbox workspace push {box.name}" + (
            f" --dest {dest}" if dest != DEFAULT_DEST else "")
        raise StateError(f"box '{box.name}' has no workspace at {dest}", push_cmd, "first")
    index = f"/tmp/microbox-export-{secrets.token_hex(8)}.index"
    env = {"GIT_INDEX_FILE": index}
    try:
        staged = _git(box, dest, "ls-files", "-z", "--stage").stdout  # the repo's own index
        _git(box, dest, "update-index", "-z", "--index-info", input=staged, env=env)
        _git(box, dest, "add", "-A", env=env)
        tree = _git(box, dest, "write-tree", env=env).stdout.decode().strip()
        return _git(box, dest, *PATCH, base, tree).stdout
    finally:
        with contextlib.suppress(MicroboxError):
            _run(box, ["rm", "-f", "--", index, f"{index}.lock"])
