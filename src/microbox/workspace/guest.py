"""The guest side of a workspace: push a repository's files into a box and
commit them as the base, export what changed since as a patch. Every step is
an exec of git (or tar) with an argv list; paths travel on stdin, NUL-separated
(docs/workspace.md)."""

from __future__ import annotations

import contextlib
import posixpath
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from microbox.agent.protocol import untrusted_text, wire
from microbox.errors import (
    AgentError,
    ExecFailed,
    ImageLacks,
    MicroboxError,
    StateError,
    UsageError,
    WorkspaceError,
)
from microbox.execution import Result
from microbox.workspace.files import WorkspaceFile, host_head, repo_root, workspace_files, write_tar

if TYPE_CHECKING:
    from microbox.box import Box

DEFAULT_DEST = "/workspace"
BASE_REF = "refs/microbox/base"  # microbox's own ref: no branch of the user's is touched
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
    needs = "git" if program == "git" else "git and tar"
    return ImageLacks(f"box '{box.name}' has no {program}, and workspaces need an image with "
                      f"{needs}, such as debian")


def _failed(box: Box, what: str, r: Result, first: bool = False) -> WorkspaceError:
    """The command's last line on stderr (git's "fatal: ...") or, with `first`,
    its first (tar names the file before its closing summary)."""
    lines = [ln for ln in r.stderr.decode(errors="replace").splitlines() if ln.strip()]
    why = (untrusted_text(lines[0 if first else -1].strip(), 300) if lines
           else f"exit status {r.exit_code}")
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
    """Stream the tar of `files` into `tar -x` in the box; the bytes shipped."""
    argv = ["tar", "-x", "-f", "-", "--no-same-owner", "-C", dest]
    try:
        ex = box.exec(argv, stdin=True, env=dict(ENV))
    except ExecFailed as err:
        if err.kind == "not_found":
            raise _lacks(box, "tar") from None
        raise
    sent: list[int] = []
    failed: list[BaseException] = []

    def feed() -> None:
        try:
            sent.append(write_tar(top, files, ex.write))
        except BaseException as err:  # reported after tar's own exit
            failed.append(err)
        with contextlib.suppress(MicroboxError):
            ex.close_stdin()  # a cut tar makes tar fail too

    feeder = threading.Thread(target=feed, name="microbox-workspace-tar", daemon=True)
    feeder.start()
    try:
        result = ex.collect()
    except BaseException:
        ex.kill()  # the feeder's next write then fails instead of waiting on a reader
        raise
    finally:
        feeder.join()
    if failed and not isinstance(failed[0], AgentError):
        raise failed[0]  # a host-side failure (a file that vanished) says what it was
    if result.exit_code != 0:
        raise _failed(box, "tar", result, first=True)  # it stopped reading: why is its word
    if failed:
        raise failed[0]
    return sent[0]


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
