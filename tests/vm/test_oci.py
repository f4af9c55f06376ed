"""Pulled images in real boxes: the image config (Entrypoint, Cmd, Env, WorkingDir,
User) with Docker's rules, `run` pulling what is missing, `image rm -f` under a
running box, and the debian image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.vm.helpers import mb


def out(*args: str) -> str:
    r = mb(*args)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def test_pull_then_run_honours_the_image_config(fresh_home: Path,
                                                registries: dict[str, Any]) -> None:
    ref = f"{registries['anon'].host}/test/app:1"
    out("image", "pull", ref)
    assert out("run", "--rm", ref) == "hello from the image as app in /home/app/work\n"
    # arguments replace Cmd (the Entrypoint `sh -c` stays); -e adds to Env
    assert out("run", "--rm", "-e", "EXTRA=x", ref, "--",
               'echo "$GREETING $EXTRA $PATH"; cat mine.txt') == (
        "hello from the image x /bin:/usr/bin\nowned by app\n")
    # --entrypoint replaces Entrypoint; -u and -w replace User and WorkingDir
    assert out("run", "--rm", "-u", "root", "-w", "/opq", "--entrypoint", "/bin/sh", ref,
               "--", "-c", "id -un; pwd; ls") == "root\n/opq\nnew.txt\n"


def test_run_pulls_what_is_missing_and_exec_gets_the_config(
        fresh_home: Path, registries: dict[str, Any]) -> None:
    ref = f"{registries['anon'].host}/test/zstd:1"
    box = json.loads(out("create", "--start", "--json", ref))["data"]["name"]
    try:
        assert out("exec", box, "--", "sh", "-c", 'id -un; pwd; echo "$GREETING"') == (
            "app\n/home/app/work\nhello from the image\n")
        r = mb("image", "rm", ref)
        assert r.returncode == 1
        assert f"run 'microbox image rm -f {ref}'" in r.stderr.decode()
        out("image", "rm", "-f", ref)
        assert out("exec", box, "--", "cat", "/opq/new.txt") == "new\n"  # disk still backed
        out("stop", box)
        out("start", box)
        assert out("exec", box, "--", "cat", "/opq/new.txt") == "new\n"
    finally:
        mb("delete", "-f", box)
    blobs = fresh_home / "images" / "blobs"
    assert len(list(blobs.glob("*.ext4"))) == 1  # kept while the box lived
    out("image", "prune")
    assert list(blobs.glob("*.ext4")) == []
    assert list((fresh_home / "images" / "layers" / "sha256").iterdir()) == []


def test_debian_runs_python(fresh_home: Path) -> None:
    """The default image; a fresh data dir reuses the build cached by `make setup`."""
    r = mb("run", "--rm", "--", "python3", "-c", "import ssl, sqlite3; print(42)",
           timeout=600)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b"42\n"
