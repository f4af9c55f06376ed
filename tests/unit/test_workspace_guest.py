"""Workspace push and export against a stand-in box that runs its commands on
this host: the git logic without a VM, GNU tar playing the agent's TAR_PUT
(tests/vm/test_workspace.py runs the same in a real debian box)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import pytest

from microbox.agent.ops import ExitStatus
from microbox.cp.report import CopyReport
from microbox.errors import ExecFailed, GuestRefused, ImageLacks, StateError, WorkspaceError
from microbox.execution import Result
from microbox.workspace import BASE_REF, export, push
from tests.unit.test_workspace import git

if TYPE_CHECKING:
    from microbox.sdk.box import Box


class LocalExecution:
    def __init__(self, p: subprocess.Popen[bytes]) -> None:
        self._p = p

    def write(self, data: bytes) -> None:
        assert self._p.stdin is not None
        self._p.stdin.write(data)

    def close_stdin(self) -> None:
        assert self._p.stdin is not None
        self._p.stdin.close()

    def kill(self) -> None:
        self._p.kill()

    def collect(self, input: bytes | None = None, limit: int | None = None) -> Result:
        err: list[bytes] = []
        assert self._p.stdout is not None and self._p.stderr is not None
        reader = threading.Thread(target=lambda: err.append(_read(self._p.stderr)))
        reader.start()
        out = self._p.stdout.read()
        reader.join()
        code = self._p.wait()
        return Result(code, out, err[0], ExitStatus(code, None))


def _read(f: IO[bytes] | None) -> bytes:
    assert f is not None
    return f.read()


class LocalBox:
    """Box.exec and Box.run, run here; `missing` programs are not found."""

    name = "local"

    def __init__(self, missing: Sequence[str] = ()) -> None:
        self.missing = set(missing)
        self.argvs: list[list[str]] = []

    def _popen(self, argv: Sequence[str], env: dict[str, str] | None) -> subprocess.Popen[bytes]:
        self.argvs.append(list(argv))
        if argv[0] in self.missing:
            raise ExecFailed("not_found", f"{argv[0]}: command not found in the box")
        return subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={**os.environ, **(env or {})})

    def exec(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
             stdin: bool = False) -> LocalExecution:
        return LocalExecution(self._popen(argv, env))

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            env: dict[str, str] | None = None) -> Result:
        p = self._popen(argv, env)
        out, err = p.communicate(input or b"")
        return Result(p.returncode, out, err, ExitStatus(p.returncode, None))

    def copy_in_tar(self, chunks: Iterable[bytes], dest: str) -> CopyReport:
        """TAR_PUT, played by GNU tar here; what it refuses, the agent's way."""
        p = subprocess.Popen(["tar", "-x", "-f", "-", "--no-same-owner", "-C", dest],
                             stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            for chunk in chunks:
                p.stdin.write(chunk)
            p.stdin.close()
        err = _read(p.stderr)
        if p.wait() != 0:
            raise GuestRefused(f"writing a tree into {dest} failed in the box (tar): "
                               f"{err.decode().splitlines()[0]}")
        return CopyReport()


def local(missing: Sequence[str] = ()) -> Box:
    return cast("Box", LocalBox(missing))


def tree(root: Path) -> dict[str, Any]:
    """Every file under `root` but .git: content (or link target) and exec bit."""
    found: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                found[rel] = ("link", os.readlink(p))
            else:
                found[rel] = (p.read_bytes(), bool(p.stat().st_mode & 0o100))
    return found


@pytest.fixture
def host(tmp_path: Path) -> Path:
    r = tmp_path / "host"
    r.mkdir()
    git(r, "init", "-q")
    (r / "text.txt").write_text("one\ntwo\nthree\n")
    (r / "blob.bin").write_bytes(bytes(range(256)) * 8)
    (r / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    (r / "tool.sh").chmod(0o755)
    (r / "dir").mkdir()
    (r / "dir" / "keep.txt").write_text("keep\n")
    (r / "dir" / "drop.txt").write_text("drop\n")
    (r / "link").symlink_to("text.txt")
    (r / ".gitignore").write_text("*.o\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "host")
    return r


def guest_git(dest: Path, *args: str) -> str:
    return git(dest, *args).strip()


def test_push_commits_the_base_and_export_round_trips(host: Path, tmp_path: Path) -> None:
    dest = tmp_path / "guest"
    box = local()
    report = push(box, host, str(dest))
    assert (report.files, report.previous, report.removed) == (7, None, 0)
    assert report.host_commit == guest_git(host, "rev-parse", "HEAD")
    assert tree(dest) == tree(host)
    assert guest_git(dest, "rev-parse", BASE_REF) == report.base
    assert guest_git(dest, "rev-parse", "HEAD") == report.base
    assert guest_git(dest, "status", "--porcelain") == ""
    assert guest_git(dest, "log", "-1", "--format=%an <%ae>%n%s", report.base) == (
        f"microbox <microbox@localhost>\nmicrobox workspace: host commit "
        f"{report.host_commit} ({guest_git(host, 'branch', '--show-current')})")
    assert export(box, str(dest)) == b""

    # in the guest: a commit, an edit, a new file, a deletion, a mode change,
    # a binary edit, a staged file and an ignored one
    (dest / "text.txt").write_text("one\n2\nthree\n")
    git(dest, "commit", "-qam", "guest work")
    (dest / "text.txt").write_text("one\n2\nthree\nfour\n")
    (dest / "new dir").mkdir()
    (dest / "new dir" / "new file.txt").write_text("new\n")
    (dest / "dir" / "drop.txt").unlink()
    (dest / "text.txt").chmod(0o755)
    (dest / "blob.bin").write_bytes(bytes(range(255, -1, -1)) * 8)
    (dest / "staged.txt").write_text("staged\n")
    git(dest, "add", "staged.txt")
    (dest / "junk.o").write_text("ignored\n")
    head, status = guest_git(dest, "rev-parse", "HEAD"), guest_git(dest, "status", "-z")
    index = (dest / ".git" / "index").read_bytes()

    patch = export(box, str(dest))
    assert b"GIT binary patch" in patch and b"new mode 100755" in patch
    assert (dest / ".git" / "index").read_bytes() == index
    assert guest_git(dest, "rev-parse", "HEAD") == head
    assert guest_git(dest, "status", "-z") == status

    applied = tmp_path / "applied"
    shutil.copytree(host, applied, symlinks=True)
    subprocess.run(["git", "-C", str(applied), "apply"], input=patch, check=True)
    want = tree(dest)
    del want["junk.o"]
    assert tree(applied) == want


def test_push_again_replaces_the_tree_and_moves_the_base(host: Path, tmp_path: Path) -> None:
    dest = tmp_path / "guest"
    box = local()
    first = push(box, host, str(dest))
    (dest / "made-in-guest.txt").write_text("mine\n")
    (host / "dir" / "drop.txt").unlink()
    (host / "dir" / "keep.txt").unlink()
    (host / "dir").rmdir()
    (host / "dir").write_text("a file where a directory was\n")  # not committed: still ships
    git(host, "add", "-A")
    second = push(box, host, str(dest))
    assert (second.previous, second.removed) == (first.base, 2)
    assert guest_git(dest, "rev-parse", f"{second.base}^") == first.base
    assert second.head == guest_git(dest, "symbolic-ref", "HEAD")  # the branch followed
    want = tree(host)
    assert tree(dest) == {**want, "made-in-guest.txt": (b"mine\n", False)}
    assert guest_git(dest, "status", "--porcelain") == "?? made-in-guest.txt"


def test_guest_commits_keep_their_branch_and_head_detaches(host: Path, tmp_path: Path
                                                           ) -> None:
    dest = tmp_path / "guest"
    box = local()
    push(box, host, str(dest))
    (dest / "text.txt").write_text("guest\n")
    git(dest, "commit", "-qam", "guest work")
    mine = guest_git(dest, "rev-parse", "HEAD")
    branch = guest_git(dest, "symbolic-ref", "HEAD")
    second = push(box, host, str(dest))
    assert second.head == "detached"
    assert guest_git(dest, "rev-parse", branch) == mine
    assert guest_git(dest, "rev-parse", "HEAD") == second.base
    assert guest_git(dest, "status", "--porcelain") == ""


def test_untracked_and_ignored_in_the_base(host: Path, tmp_path: Path) -> None:
    (host / "scratch.txt").write_text("untracked\n")
    (host / "forced.o").write_text("ignored but tracked\n")
    git(host, "add", "-f", "forced.o")
    dest = tmp_path / "guest"
    box = local()
    report = push(box, host, str(dest), include_untracked=True)
    assert report.files == 9
    assert "scratch.txt" in guest_git(dest, "ls-tree", "-r", "--name-only", BASE_REF)
    (dest / "forced.o").write_text("edited in the guest\n")
    assert b"+edited in the guest" in export(box, str(dest))


def test_a_refused_file_names_it_and_the_way_out(host: Path, tmp_path: Path) -> None:
    dest = tmp_path / "guest"
    box = local()
    push(box, host, str(dest))
    (dest / "text.txt").unlink()
    (dest / "text.txt").mkdir()  # the box made a directory where a pushed file was
    (dest / "text.txt" / "inner").write_text("mine\n")
    with pytest.raises(WorkspaceError) as err:
        push(box, host, str(dest))
    assert "tar: text.txt: " in str(err.value)
    assert str(err.value).endswith("; move it aside in the box (or 'microbox workspace "
                                   "export' first), then push again.")
    assert guest_git(dest, "rev-parse", BASE_REF) == guest_git(dest, "rev-parse", "HEAD")


def test_export_before_push_names_the_push(tmp_path: Path) -> None:
    with pytest.raises(StateError) as err:
        export(local(), str(tmp_path / "nothing"))
    assert str(err.value) == (f"box 'local' has no workspace at {tmp_path}/nothing; run "
                              f"'microbox workspace push local --dest {tmp_path}/nothing' first.")


def test_no_git_is_one_sentence_naming_debian(host: Path, tmp_path: Path) -> None:
    for call in (lambda box: push(box, host, str(tmp_path / "g")),
                 lambda box: export(box, str(tmp_path / "g"))):
        with pytest.raises(ImageLacks) as err:
            call(local(missing=["git"]))
        assert str(err.value) == ("box 'local' has no git, and workspaces need an image with "
                                  "git, such as debian.")
