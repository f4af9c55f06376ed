"""The pull and build paths work for a user without root: run as uid 65534 with
a scratch home when the suite runs as root, and as the suite's own user otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import microbox
from tests.images import ext4
from tests.registry import Registry
from tests.vm.helpers import CLI

NOBODY = 65534


def _searchable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & 0o001 for p in (path, *path.parents) if p.is_dir())


@pytest.fixture
def scratch() -> Iterator[Path]:
    if os.geteuid() == 0:
        for needed in (Path(sys.prefix), Path(microbox.__file__).parent):
            if not _searchable_by_others(needed):
                pytest.skip(f"uid {NOBODY} cannot reach {needed} (a checkout under a private "
                            "directory such as /root): clone the repo where others can read it")
    d = Path(tempfile.mkdtemp(prefix="mbn-", dir="/tmp"))
    for sub in ("home", "data", "cache"):
        (d / sub).mkdir()
    if os.geteuid() == 0:
        for p in (d, *d.iterdir()):
            os.chown(p, NOBODY, NOBODY)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def as_user(scratch: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    prefix = (["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
              if os.geteuid() == 0 else [])
    env = {**os.environ, "HOME": str(scratch / "home"), "MICROBOX_HOME": str(scratch / "data"),
           "MICROBOX_CACHE": str(scratch / "cache"), "XDG_RUNTIME_DIR": str(scratch / "home")}
    return subprocess.run([*prefix, *CLI, *args], capture_output=True, env=env, timeout=300)


def _data(r: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    assert r.returncode == 0, r.stderr.decode()
    data: dict[str, Any] = json.loads(r.stdout)["data"]
    return data


def test_pull_without_root_keeps_the_image_owners(scratch: Path,
                                                  registries: dict[str, Registry]) -> None:
    data = _data(as_user(scratch, "image", "pull", "--json",
                         f"{registries['anon'].host}/test/app:1"))
    image = scratch / "data" / "images" / "blobs" / f"{data['digest']}.ext4"
    if os.geteuid() == 0:
        assert image.stat().st_uid == NOBODY  # really made by the unprivileged user
    mine = ext4.ls(image, "/home/app/work")["mine.txt"]
    assert (mine.uid, mine.gid, mine.mode & 0o7777) == (1000, 1000, 0o640)
    assert ext4.ls(image, "/bin")["suid"].mode & 0o7777 == 0o4755


def test_build_and_import_without_root(scratch: Path, tmp_path: Path) -> None:
    built = _data(as_user(scratch, "image", "build", "--json", "busybox"))
    assert built["name"] == "busybox"
    tree = scratch / "home" / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hello").write_text("hi\n")
    if os.geteuid() == 0:
        for p in (tree, tree / "etc", tree / "etc" / "hello"):
            os.chown(p, NOBODY, NOBODY)
    imported = _data(as_user(scratch, "image", "import", "--json", "--name", "mine", str(tree)))
    image = scratch / "data" / "images" / "blobs" / f"{imported['digest']}.ext4"
    assert ext4.cat(image, "/etc/hello") == b"hi\n"


def test_debian_build_without_subordinate_ids_says_what_to_run(scratch: Path) -> None:
    import pwd

    user = pwd.getpwuid(NOBODY if os.geteuid() == 0 else os.getuid()).pw_name
    subuid = Path("/etc/subuid").read_text() if Path("/etc/subuid").exists() else ""
    if any(line.split(":")[0] == user for line in subuid.splitlines()):
        pytest.skip(f"{user} has subordinate ids here: the build would run for a minute")
    r = as_user(scratch, "image", "build", "debian")
    assert r.returncode == 1
    last = r.stderr.decode().strip().splitlines()[-1]  # after the step line
    assert last.startswith("microbox: building the debian image without root needs "
                           "subordinate ids") and "usermod --add-subuids" in last, last
    blobs = scratch / "data" / "images" / "blobs"
    assert not blobs.exists() or not list(blobs.iterdir())
