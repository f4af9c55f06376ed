"""Which files a workspace push ships, and the tar that carries them (no VM)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from microbox.cp.report import CopyReport
from microbox.cp.tarwrite import files_tar
from microbox.errors import HostError, UsageError
from microbox.workspace import repo_root, workspace_files

NEWLINE_NAME = "two\nlines.txt"
RAW_NAME = os.fsdecode(b"raw-\xff.bin")  # not UTF-8


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c",
                           "user.email=t@t", *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """tracked: a.txt, with space.txt, two\\nlines.txt, raw-\\xff.bin, sub/x.sh (+x),
    link -> a.txt, .gitignore, forced.log (ignored but tracked), gone.txt
    (deleted in the work tree); untracked: new.txt; ignored: build.log, out/."""
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q")
    (r / "a.txt").write_text("a\n")
    (r / "with space.txt").write_text("s\n")
    (r / NEWLINE_NAME).write_text("n\n")
    (r / RAW_NAME).write_bytes(b"\0\1\2")
    (r / "sub").mkdir()
    (r / "sub" / "x.sh").write_text("#!/bin/sh\n")
    (r / "sub" / "x.sh").chmod(0o755)
    (r / "link").symlink_to("a.txt")
    (r / ".gitignore").write_text("*.log\nout/\n")
    (r / "gone.txt").write_text("g\n")
    git(r, "add", "-A")
    (r / "forced.log").write_text("f\n")
    git(r, "add", "-f", "forced.log")
    git(r, "commit", "-qm", "init")
    (r / "gone.txt").unlink()
    (r / "new.txt").write_text("new\n")
    (r / "build.log").write_text("ignored\n")
    (r / "out").mkdir()
    (r / "out" / "o.bin").write_text("ignored\n")
    return r


TRACKED = {".gitignore", "a.txt", "forced.log", "link", "sub/x.sh", "with space.txt",
           NEWLINE_NAME, RAW_NAME}


def test_tracked_files_as_they_are_in_the_work_tree(repo: Path) -> None:
    files = workspace_files(repo)
    assert {f.path for f in files} == TRACKED  # gone.txt was deleted: not shipped
    assert all(f.tracked for f in files)
    by = {f.path: f for f in files}
    assert by["link"].is_link and by["link"].size == len("a.txt")
    assert by["sub/x.sh"].mode & 0o111 and not by["a.txt"].mode & 0o111
    (repo / "a.txt").write_text("changed, not committed\n")
    assert {f.path: f.size for f in workspace_files(repo)}["a.txt"] == 23


def test_untracked_only_when_asked_and_never_ignored(repo: Path) -> None:
    files = workspace_files(repo, include_untracked=True)
    assert {f.path for f in files} == TRACKED | {"new.txt"}
    assert [f.path for f in files if not f.tracked] == ["new.txt"]
    (repo / "odd\nname too").write_text("x")
    assert "odd\nname too" in {f.path for f in workspace_files(repo, include_untracked=True)}


def test_a_subdirectory_means_its_whole_repository(repo: Path) -> None:
    assert repo_root(repo / "sub") == repo
    assert {f.path for f in workspace_files(repo / "sub")} == TRACKED


def test_submodules_and_nested_repositories_are_left_out(repo: Path, tmp_path: Path) -> None:
    inner = repo / "nested"
    inner.mkdir()
    git(inner, "init", "-q")
    (inner / "f").write_text("f")
    git(inner, "add", "f")
    git(inner, "commit", "-qm", "x")
    assert {f.path for f in workspace_files(repo, include_untracked=True)} == TRACKED | {
        "new.txt"}  # git lists it as nested/: not a file
    git(repo, "add", "nested")  # now a gitlink, as a submodule is
    assert "nested" not in {f.path for f in workspace_files(repo)}


def test_outside_a_work_tree_is_refused_in_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        workspace_files(tmp_path)
    assert str(err.value) == (f"{tmp_path} is not in a git work tree; give the path of a git "
                              "repository (or run 'git init' there first).")
    with pytest.raises(UsageError, match="is not a directory"):
        workspace_files(tmp_path / "missing")


def test_tar_holds_the_files_with_modes_links_and_raw_names(repo: Path) -> None:
    files = workspace_files(repo, include_untracked=True)
    report = CopyReport()
    buf = io.BytesIO(b"".join(files_tar(str(repo), [f.path for f in files], report,
                                        owner=(1000, 1001))))
    assert report.bytes == sum(f.size for f in files if not f.is_link)
    with tarfile.open(fileobj=buf, encoding="utf-8", errors="surrogateescape") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {f.path for f in files}
        assert all((m.uid, m.gid) == (1000, 1001) for m in members.values())
        assert members["link"].issym() and members["link"].linkname == "a.txt"
        assert members["sub/x.sh"].mode == 0o755
        extracted = tar.extractfile(members[RAW_NAME])
        assert extracted is not None and extracted.read() == b"\0\1\2"
    raw = buf.getvalue()
    assert b"raw-\xff.bin" in raw and b"two\nlines.txt" in raw  # the names' own bytes


def test_the_tar_refuses_a_path_through_a_link_and_a_vanished_file(repo: Path,
                                                                    tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not in the repository\n")
    (repo / "via").symlink_to(outside)
    with pytest.raises(HostError, match="via/secret is reached through a symbolic link"):
        b"".join(files_tar(str(repo), ["via/secret"], CopyReport()))
    with pytest.raises(HostError, match=r"gone\.txt disappeared while it was being sent"):
        b"".join(files_tar(str(repo), ["gone.txt"], CopyReport()))


def test_dry_run_needs_no_box_and_quotes_odd_names(repo: Path, tmp_path: Path) -> None:
    env = {**os.environ, "MICROBOX_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-m", "microbox", "workspace", "push", "nosuchbox",
                        str(repo), "--dry-run"], capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert '"two\\nlines.txt"' in lines and '"raw-\\377.bin"' in lines
    assert "with space.txt" in lines and len(lines) == len(TRACKED)
    assert b"8 files" in r.stderr and b"nothing was pushed" in r.stderr
    r = subprocess.run([sys.executable, "-m", "microbox", "workspace", "push", "nosuchbox",
                        str(repo), "--dry-run", "--include-untracked", "--json"],
                       capture_output=True, env=env, timeout=60)
    data = json.loads(r.stdout)["data"]
    assert {"path": "new.txt", "size": 4, "mode": "644", "link": False,
            "tracked": False} in data["files"]
    assert {"b64": "cmF3Lf8uYmlu"} in [f["path"] for f in data["files"]]
