"""Snapshots and fork on real boxes: state carried over, each clone its own
machine, and a snapshot that cannot be restored creates nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import microbox
from microbox.core import snapspace
from microbox.errors import DiskFull
from tests import fullfs
from tests.vm.conftest import wait_for
from tests.vm.helpers import mb

# The counter is replaced by a rename, never rewritten in place: a snapshot (or a
# reader) that comes between a truncate and its write would see an empty file.
LOOP = ("n=0; while true; do n=$((n+1)); echo $n > /root/count.new; "
        "mv /root/count.new /root/count; sleep 0.1; done")
PROBE = ["sh", "-c", "head -c 16 /dev/urandom | od -An -tx1; hostname; cat /etc/machine-id"]


def _count(box: microbox.Box) -> int:
    return int(box.run(["cat", "/root/count"]).stdout)


def test_fork_carries_running_state_into_clones_that_are_their_own_machines() -> None:
    with microbox.Runtime() as rt, rt.boxes.run("busybox", name="forked") as src:
        src.run(["sh", "-c", "echo before > /root/mark"])
        src.exec(["sh", "-c", LOOP], detach=True)
        wait_for(lambda: src.run(["test", "-s", "/root/count"]).exit_code == 0, 30, "the loop")
        clones = src.fork(2, name_prefix="kid")
        try:
            assert [c.name for c in clones] == ["kid-1", "kid-2"]
            seen = set()
            for c in clones:
                start = _count(c)
                assert start >= 1  # the loop's counter came along
                wait_for(lambda c=c, start=start: _count(c) > start, 30, "the loop in a clone")
                rnd, host, mid = c.run(PROBE).stdout.decode().splitlines()
                assert (host, mid) == (c.name, c.id)
                seen.add(rnd)
                assert c.run(["cat", "/root/mark"]).stdout == b"before\n"
                c.run(["sh", "-c", f"echo {c.name} > /root/mark"])
            assert len(seen) == 2
            for c in clones:
                assert c.run(["cat", "/root/mark"]).stdout == f"{c.name}\n".encode()
            assert src.run(["cat", "/root/mark"]).stdout == b"before\n"
        finally:
            for c in clones:
                c.delete(force=True)
            collected = rt.host.gc()  # here, so that a failure above leaves no snapshot either
    assert collected.snapshots  # fork's own snapshot goes once its clones are gone


def test_a_booted_box_forks_too() -> None:
    """A box booted rather than restored (--cold, or any start after its first)
    has QEMU's own RAM instead of a memory backend; its RAM goes along all the
    same (a file in tmpfs lives only there)."""
    with microbox.Runtime() as rt, rt.boxes.run("busybox", name="booted", cold=True) as src:
        assert src.info().template is None
        src.run(["sh", "-c", "echo kept > /dev/shm/mark"])
        clones = src.fork(1)
        try:
            assert clones[0].run(["cat", "/dev/shm/mark"]).stdout == b"kept\n"
        finally:
            for c in clones:
                c.delete(force=True)
            rt.host.gc()


def test_snapshot_commands_round_trip(home: Path) -> None:
    r = mb("create", "--start", "--name", "snapsrc", "busybox")
    assert r.returncode == 0, r.stderr
    try:
        assert mb("exec", "snapsrc", "--", "sh", "-c", "echo kept > /root/f").returncode == 0
        r = mb("snapshot", "create", "snapsrc", "s1")
        assert r.returncode == 0, r.stderr
        assert mb("exec", "snapsrc", "--", "true").returncode == 0  # it kept running
        listed = json.loads(mb("snapshot", "ls", "--json").stdout)["data"]
        assert [s["name"] for s in listed] == ["s1"]
        r = mb("snapshot", "restore", "s1", "--name", "back")
        assert r.returncode == 0, r.stderr
        assert mb("exec", "back", "--", "cat", "/root/f").stdout == b"kept\n"
        r = mb("snapshot", "rm", "s1")
        assert r.returncode == 1 and b"snapshot rm -f s1" in r.stderr
        s1 = json.loads(mb("snapshot", "inspect", "--json", "s1").stdout)["data"]["id"]
        assert mb("snapshot", "rm", "-f", "s1").returncode == 0
        assert mb("snapshot", "inspect", "s1").returncode == 1
        assert mb("exec", "back", "--", "cat", "/root/f").stdout == b"kept\n"
        assert mb("restart", "back").returncode == 0  # its disk's backing file is still there
        assert mb("exec", "back", "--", "cat", "/root/f").stdout == b"kept\n"
        assert mb("delete", "-f", "back").returncode == 0
        gc = json.loads(mb("gc", "--json").stdout)["data"]
        assert [Path(p).name for p in gc["snapshots"]] == [s1]
        assert not (home / "snapshots" / s1).exists()
    finally:
        mb("delete", "-f", "snapsrc")
        mb("delete", "-f", "back")


def test_a_corrupt_snapshot_fails_in_one_sentence_and_creates_nothing(home: Path) -> None:
    with microbox.Runtime() as rt, rt.boxes.run("busybox") as src:
        snap = src.snapshot("broken")
    state = snap.path / "state"
    state.chmod(0o644)
    state.write_bytes(b"\0not a migration stream" * 100)
    before = {b["id"] for b in json.loads(mb("list", "--all", "--json").stdout)["data"]}
    r = mb("snapshot", "restore", "broken", "--name", "never")
    assert r.returncode == 1
    assert r.stderr.decode().startswith("microbox: the snapshot cannot be restored")
    assert len(r.stderr.decode().strip().splitlines()) == 1
    after = {b["id"] for b in json.loads(mb("list", "--all", "--json").stdout)["data"]}
    assert after == before and not list((home / "boxes").iterdir())
    assert mb("snapshot", "rm", "broken").returncode == 0


def test_async_fork_and_restore() -> None:
    import asyncio

    from microbox.sdk.aio import AsyncRuntime

    async def main() -> None:
        async with AsyncRuntime() as rt, await rt.boxes.run("busybox") as box:
            await box.run(["sh", "-c", "echo a > /root/a"])
            (clone,) = await box.fork(1)
            assert (await clone.run(["cat", "/root/a"])).stdout == b"a\n"
            await clone.delete(force=True)
            snap = await box.snapshot("async-snap")
            back = await rt.boxes.restore(snap.name)
            assert (await back.run(["cat", "/root/a"])).stdout == b"a\n"
            await back.delete(force=True)
            await rt.snapshots.remove(snap.id)

    asyncio.run(main())


def test_an_image_a_snapshot_needs_is_kept(fresh_home: Path) -> None:
    """image rm refuses while a snapshot needs the image; with -f the name goes but
    the file stays (prune too) until the snapshot is gone."""
    assert mb("create", "--start", "--name", "src", "busybox").returncode == 0
    try:
        assert mb("snapshot", "create", "src", "keep").returncode == 0
    finally:
        mb("delete", "-f", "src")
    r = mb("image", "rm", "busybox")
    assert r.returncode == 1, r
    assert r.stderr.startswith(b"microbox: image 'busybox' is used by snapshot keep; run "
                               b"'microbox image rm -f busybox'"), r.stderr
    assert mb("image", "rm", "-f", "busybox").returncode == 0
    assert mb("image", "prune").returncode == 0
    blobs = fresh_home / "images" / "blobs"
    assert len(list(blobs.glob("*.ext4"))) == 1  # the snapshot's disk still backed
    r = mb("snapshot", "restore", "keep", "--name", "back")
    assert r.returncode == 0, r.stderr
    try:
        assert mb("exec", "back", "--", "true").returncode == 0
        # restored onto the snapshot's own image file: busybox was not built again
        digest = json.loads(mb("inspect", "back").stdout)["image_digest"]
        assert [b.name for b in blobs.glob("*.ext4")] == [f"{digest.replace(':', '-')}.ext4"]
        assert mb("image", "prune").returncode == 0
        assert len(list(blobs.glob("*.ext4"))) == 1
    finally:
        mb("delete", "-f", "back")
    assert mb("snapshot", "rm", "-f", "keep").returncode == 0
    assert mb("gc").returncode == 0
    assert mb("image", "prune").returncode == 0
    assert list(blobs.glob("*.ext4")) == []


def test_a_snapshot_the_disk_cannot_hold_is_refused_and_the_box_runs_on(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshots dir on a 16 MiB tmpfs: refused before the box stops, naming
    the space needed and free, with nothing left behind; and a save let past that
    check runs out of space and says so. The box runs on."""
    assert mb("create", "--start", "--name", "snapfull", "busybox").returncode == 0
    try:
        with fullfs.mounted(home / "snapshots", "tmpfs", 16) as snaps:
            r = mb("snapshot", "create", "snapfull", "wontfit")
            assert r.returncode == 1
            line = r.stderr.decode()
            assert line.startswith("microbox: a snapshot of box 'snapfull' needs up to ")
            assert f"MiB on the tmpfs at {snaps}, which has 16 MiB free" in line, line
            assert "run 'microbox image prune'" in line and line.count("\n") == 1
            assert os.listdir(snaps) == []
            assert json.loads(mb("inspect", "snapfull").stdout)["status"] == "running"

            monkeypatch.setattr(snapspace, "check", lambda *_: None)
            with microbox.Runtime() as rt, pytest.raises(DiskFull) as err:
                rt.boxes.get("snapfull").snapshot("wontfit")
            assert str(err.value).startswith(
                f"saving box 'snapfull' ran out of space on the tmpfs at {snaps} ("), err.value
            assert os.listdir(snaps) == []
        assert mb("exec", "snapfull", "--", "true").returncode == 0
    finally:
        mb("delete", "-f", "snapfull")
