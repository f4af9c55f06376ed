"""Workspaces on real boxes: push a repository into debian, work on it there,
export the patch and apply it on the host; busybox has no git and says so."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import microbox
from microbox.workspace import BASE_REF
from tests.vm.helpers import mb

GIT = ["git", "-C", "/workspace", "-c", "user.name=guest", "-c", "user.email=guest@box"]
QUIET = {"GIT_OPTIONAL_LOCKS": "0"}  # status must not refresh the index it is looking at


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c",
                           "user.email=t@t", *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def host_tree(root: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            p = Path(dirpath, name)
            found[str(p.relative_to(root))] = (
                ("link", os.readlink(p)) if p.is_symlink()
                else (p.read_bytes(), bool(p.stat().st_mode & 0o100)))
    return found


def guest_tree(box: microbox.Box, skip: set[str]) -> dict[str, Any]:
    r = box.run(["tar", "-c", "-f", "-", "--exclude=./.git", "-C", "/workspace", "."])
    assert r.exit_code == 0, r.stderr
    found: dict[str, Any] = {}
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        for m in tar.getmembers():
            name = m.name.removeprefix("./")
            if m.isdir() or name in skip:
                continue
            if m.issym():
                found[name] = ("link", m.linkname)
            else:
                f = tar.extractfile(m)
                assert f is not None
                found[name] = (f.read(), bool(m.mode & 0o100))
    return found


def ok(box: microbox.Box, *argv: str, env: dict[str, str] | None = None) -> bytes:
    r = box.run(list(argv), env=env)
    assert r.exit_code == 0, (argv, r.stderr)
    return r.stdout


def guest_state(box: microbox.Box) -> tuple[bytes, ...]:
    """HEAD, branches, refs, the index file's bytes and status: what export must not change."""
    return (ok(box, *GIT, "rev-parse", "HEAD", env=QUIET),
            ok(box, *GIT, "for-each-ref", env=QUIET),
            ok(box, "sha256sum", "/workspace/.git/index"),
            ok(box, *GIT, "status", "--porcelain=v1", "-z", "--untracked-files=all", env=QUIET))


def make_repo(root: Path) -> Path:
    root.mkdir()
    git(root, "init", "-q")
    (root / "notes.txt").write_text("alpha\nbeta\ngamma\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 64 + b"\0\xff")
    (root / "run.sh").write_text("#!/bin/sh\necho from the host\n")
    (root / "run.sh").chmod(0o755)
    (root / "old.txt").write_text("deleted in the box\n")
    (root / "with space.txt").write_text("spaced\n")
    (root / ".gitignore").write_text("*.tmp\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "host")
    (root / "draft.txt").write_text("untracked on the host\n")
    return root


def test_push_work_export_apply(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    with microbox.Runtime() as rt, rt.boxes.run("debian", name="wsbox") as box:
        report = box.workspace_push(repo)
        assert (report.files, report.dest, report.previous) == (6, "/workspace", None)
        assert report.host_commit == git(repo, "rev-parse", "HEAD")
        assert ok(box, *GIT, "rev-parse", BASE_REF).decode().strip() == report.base
        assert ok(box, *GIT, "status", "--porcelain") == b""
        assert guest_tree(box, set()) == {k: v for k, v in host_tree(repo).items()
                                          if k != "draft.txt"}
        assert ok(box, "/workspace/run.sh") == b"from the host\n"

        # work in the box: a commit, an edit on top, a new file, a deletion, a
        # binary change, a mode change, and an ignored file that must not travel
        script = ("set -e; cd /workspace; echo delta >> notes.txt; "
                  "git commit -qam 'guest commit'; sed -i s/alpha/ALPHA/ notes.txt; "
                  "mkdir -p src; printf 'new\\n' > 'src/new file.py'; rm old.txt; "
                  "printf '\\000\\001binary' >> data.bin; chmod +x 'with space.txt'; "
                  "echo scratch > cache.tmp; git add src")
        assert ok(box, "sh", "-c", script, env={"GIT_AUTHOR_NAME": "g", "GIT_AUTHOR_EMAIL":
                                               "g@b", "GIT_COMMITTER_NAME": "g",
                                               "GIT_COMMITTER_EMAIL": "g@b"}) == b""
        before = guest_state(box)
        patch = box.workspace_export()
        assert guest_state(box) == before
        assert b"GIT binary patch" in patch and b"deleted file mode" in patch

        applied = tmp_path / "applied"
        shutil.copytree(repo, applied, symlinks=True)
        subprocess.run(["git", "-C", str(applied), "apply"], input=patch, check=True)
        want = guest_tree(box, {"cache.tmp"})
        got = host_tree(applied)
        assert got.pop("draft.txt") == (b"untracked on the host\n", False)  # never shipped
        assert got == want

        # the CLI and the asyncio face give the same patch
        out = tmp_path / "cli.patch"
        r = mb("workspace", "export", "wsbox", "-o", str(out), "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["data"] == {"bytes": len(patch), "output": str(out),
                                                "patch": None}
        assert out.read_bytes() == patch
        assert mb("workspace", "export", "wsbox").stdout == patch

        async def via_asyncio() -> bytes:
            async with microbox.AsyncRuntime() as art:
                abox = await art.boxes.get("wsbox")
                return await abox.workspace_export()

        assert asyncio.run(via_asyncio()) == patch

        # a second push replaces the tree: the host's deletion is gone from the box
        (repo / "with space.txt").unlink()
        r = mb("workspace", "push", "wsbox", str(repo), "--include-untracked", "--json")
        assert r.returncode == 0, r.stderr
        second = json.loads(r.stdout)["data"]
        assert (second["previous"], second["files"], second["head"]) == (
            report.base, 6, "detached")  # the guest's commit keeps its branch
        assert guest_tree(box, {"cache.tmp", "src/new file.py"}) == host_tree(repo)

        # the box made a directory where a pushed file goes: the push fails in a
        # sentence naming the file, and the base stays where it was
        ok(box, "sh", "-c", "rm /workspace/notes.txt && mkdir -p /workspace/notes.txt/x")
        r = mb("workspace", "push", "wsbox", str(repo))
        assert r.returncode == 1 and b"notes.txt" in r.stderr, r
        assert r.stderr.count(b"\n") == 1, r.stderr
        base = ok(box, *GIT, "rev-parse", BASE_REF).decode().strip()
        assert base == second["base"]


def test_busybox_has_no_git(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    with microbox.Runtime() as rt, rt.boxes.run("busybox", name="nogit"):
        sentence = (b"microbox: box 'nogit' has no git, and workspaces need an image with "
                    b"git, such as debian.\n")
        for argv in (["push", "nogit", str(repo)], ["export", "nogit"]):
            r = mb("workspace", *argv)
            assert (r.returncode, r.stderr) == (1, sentence)
        r = mb("workspace", "push", "nogit", str(repo), "--json")
        assert json.loads(r.stdout)["error"]["type"] == "image_lacks"


def test_a_box_user_owns_what_it_was_pushed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    with microbox.Runtime() as rt, rt.boxes.run("debian", name="wsuser", user="nobody") as box:
        report = box.workspace_push(repo, dest="/tmp/ws")
        assert report.files == 6
        owners = ok(box, "sh", "-c", "stat -c '%u:%g %n' /tmp/ws/notes.txt /tmp/ws/run.sh; "
                                     "echo more >> /tmp/ws/notes.txt && echo appended")
        assert owners == (b"65534:65534 /tmp/ws/notes.txt\n65534:65534 /tmp/ws/run.sh\n"
                          b"appended\n")
        assert b"+more" in box.workspace_export("/tmp/ws")
