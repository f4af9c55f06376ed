"""`microbox cp` and Box.copy_* on real boxes: trees both ways, a hostile guest,
stopped boxes, tar streams and a large file."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import microbox
from microbox.errors import Refused
from tests.trees import snapshot
from tests.vm.helpers import mb

MTIME_NS = 1_600_000_000_123_456_789


def make_tree(root: Path) -> Path:
    src = root / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    (src / "secret").write_bytes(b"s3cret")
    (src / "secret").chmod(0o600)
    (src / "sub" / "data").write_bytes(bytes(range(256)) * 300)
    (src / "link").symlink_to("sub/data")
    for p in (src / "run.sh", src / "secret", src / "sub" / "data"):
        os.utime(p, ns=(MTIME_NS, MTIME_NS))
    return src


@pytest.fixture
def named_box() -> Iterator[str]:
    name = "cpbox"
    assert mb("create", "--start", "--name", name, "busybox").returncode == 0
    try:
        yield name
    finally:
        mb("delete", "-f", name)


def test_tree_round_trip_keeps_modes_mtimes_and_symlinks(tmp_path: Path) -> None:
    src = make_tree(tmp_path)
    with microbox.Runtime() as rt, rt.boxes.run("busybox") as box:
        report = box.copy_in(src, "/root")
        assert (report.files, report.symlinks, report.started) == (3, 1, False)
        r = box.run(["sh", "-c", "cd /root/tree && stat -c '%n %a %Y' run.sh secret sub/data "
                     "&& readlink link"])
        sec = MTIME_NS // 10**9
        assert r.stdout.decode().split("\n") == [f"run.sh 755 {sec}", f"secret 600 {sec}",
                                                 f"sub/data 644 {sec}", "sub/data", ""]
        back = tmp_path / "back"
        report = box.copy_out("/root/tree", back)
        assert report.files == 3
    for name, mode in (("run.sh", 0o755), ("secret", 0o600), ("sub/data", 0o644)):
        st = (back / name).stat()
        assert stat.S_IMODE(st.st_mode) == mode
        assert st.st_mtime_ns == MTIME_NS
        assert (back / name).read_bytes() == (src / name).read_bytes()
    assert os.readlink(back / "link") == "sub/data"


def test_async_twin_copies(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"async")

    async def main() -> None:
        async with microbox.AsyncRuntime() as rt, await rt.boxes.run("busybox") as box:
            await box.copy_in(tmp_path / "f", "/root/g")
            await box.copy_out("/root/g", tmp_path / "h")

    asyncio.run(main())
    assert (tmp_path / "h").read_bytes() == b"async"


def test_a_hostile_guest_writes_nothing_outside_the_destination(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"precious")
    dest = tmp_path / "dest"
    dest.mkdir()
    before = snapshot(tmp_path, skip="dest")
    with microbox.Runtime() as rt, rt.boxes.run("busybox") as box:
        made = box.run(["sh", "-c", f"""set -e
            mkdir -p /root/evil && cd /root/evil
            ln -s / rootlink
            ln -s ../../../../../../.. up
            ln -s {outside} etc
            echo x > plain"""])
        assert made.exit_code == 0, made.stderr
        box.copy_out("/root/evil", dest)
        assert os.readlink(dest / "evil" / "rootlink") == "/"
        assert os.readlink(dest / "evil" / "up") == "../../../../../../.."
        assert os.readlink(dest / "evil" / "etc") == str(outside)
        # The box now swaps the symlink for a directory whose entries would go
        # through the symlink the first copy left in dest.
        swapped = box.run(["sh", "-c", "cd /root/evil && rm etc && mkdir etc && "
                           "echo pwned > etc/keep && echo pwned > etc/new"])
        assert swapped.exit_code == 0
        with pytest.raises(Refused):
            box.copy_out("/root/evil", dest)
        r = mb("cp", f"{box.name}:/root/evil", str(dest))
        assert r.returncode == 1
        line = r.stderr.decode()
        assert line.count("\n") == 1 and line.startswith("microbox: ") and ". " not in line
    assert snapshot(tmp_path, skip="dest") == before
    assert os.readlink(dest / "evil" / "etc") == str(outside)


def test_cp_on_a_stopped_box_starts_it_briefly(tmp_path: Path, named_box: str) -> None:
    assert mb("stop", named_box).returncode == 0
    (tmp_path / "note").write_bytes(b"while stopped")
    r = mb("cp", str(tmp_path / "note"), f"{named_box}:/root/")
    assert r.returncode == 0, r.stderr
    assert r.stderr.decode().count("\n") == 1 and b"started for the copy" in r.stderr
    with microbox.Runtime() as rt:
        box = rt.boxes.get(named_box)
        assert box.status == "stopped"
        report = box.copy_out("/root/note", tmp_path / "again")
        assert report.started and box.reload().status == "stopped"
    assert (tmp_path / "again").read_bytes() == b"while stopped"


def test_tar_streams_both_ways(tmp_path: Path, named_box: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("streamed/hello")
        data = b"from stdin\n"
        info.size, info.mode = len(data), 0o640
        tar.addfile(info, io.BytesIO(data))
    r = mb("cp", "-", f"{named_box}:/root", input=buf.getvalue())
    assert r.returncode == 0, r.stderr
    out = mb("cp", f"{named_box}:/root/streamed", "-")
    assert out.returncode == 0, out.stderr
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        names = tar.getnames()
        f = tar.extractfile("streamed/hello")
        assert f is not None and f.read() == data
        assert tar.getmember("streamed/hello").mode == 0o640
    assert names[0].rstrip("/") == "streamed"
    missing = mb("cp", "-", f"{named_box}:/root/nowhere", input=buf.getvalue())
    assert missing.returncode == 1 and b"mkdir -p /root/nowhere" in missing.stderr


def test_a_20_mb_file_round_trip(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(os.urandom(20 << 20))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    with microbox.Runtime() as rt, rt.boxes.run("busybox") as box:
        box.copy_in(big, "/root/big")
        r = box.run(["sha256sum", "/root/big"], timeout=120)
        assert r.stdout.split()[0].decode() == digest
        box.copy_out("/root/big", tmp_path / "back")
    assert hashlib.sha256((tmp_path / "back").read_bytes()).hexdigest() == digest


def _visible(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if not n.startswith("."))


def _leftovers(d: Path) -> list[str]:
    """The names a killed copy left in `d`: temporaries, hidden, named for what they held."""
    hidden = sorted(n for n in os.listdir(d) if n.startswith("."))
    assert all(re.fullmatch(r"\.[a-z]+\.microbox-cp-[0-9a-f]{8}", n) for n in hidden), hidden
    return [n.split(".")[1] for n in hidden]


def test_a_copy_out_killed_mid_file_leaves_nothing_under_the_real_name(
        tmp_path: Path, named_box: str, monkeypatch: pytest.MonkeyPatch) -> None:
    made = mb("exec", named_box, "--", "sh", "-c",
              "mkdir -p /root/tree && head -c 8388608 /dev/urandom > /root/tree/big && "
              "echo small > /root/tree/a && chmod 640 /root/tree/big && "
              "touch -d '2020-01-02 03:04:05' /root/tree/big && "
              "stat -c %Y /root/tree/big && sha256sum /root/tree/big")
    assert made.returncode == 0, made.stderr
    mtime, digest = made.stdout.split()[:2]
    old = tmp_path / "old"
    old.write_bytes(b"old content")
    into = tmp_path / "into"
    into.mkdir()

    monkeypatch.setenv("MICROBOX_FAILPOINT", "cp-out-partial")  # SIGKILL after 1 MiB of big
    for src, dest in ((f"{named_box}:/root/tree/big", tmp_path / "new"),
                      (f"{named_box}:/root/tree/big", old),
                      (f"{named_box}:/root/tree", into)):
        r = mb("cp", src, str(dest))
        assert r.returncode == -9, r.stderr
    assert _visible(tmp_path) == ["into", "old"]  # no "new", not even a part of it
    assert old.read_bytes() == b"old content"
    assert _visible(into) == []  # a tree appears under its name only when whole
    assert set(_leftovers(tmp_path)) <= {"new", "old"} and set(_leftovers(into)) <= {"tree"}

    monkeypatch.delenv("MICROBOX_FAILPOINT")
    for src, dest in ((f"{named_box}:/root/tree/big", old),
                      (f"{named_box}:/root/tree", into)):
        r = mb("cp", src, str(dest))
        assert r.returncode == 0, r.stderr
    for got in (old, into / "tree" / "big"):
        assert hashlib.sha256(got.read_bytes()).hexdigest().encode() == digest
        assert stat.S_IMODE(got.stat().st_mode) == 0o640
        assert got.stat().st_mtime_ns == int(mtime) * 10**9
    assert (into / "tree" / "a").read_bytes() == b"small\n"
    assert sorted(os.listdir(into / "tree")) == ["a", "big"]  # no temporary left
