"""Host folders (`-v HOST_DIR:GUEST_DIR[:ro]`) and named volumes with real
boxes: what the guest writes lands on the host as the invoking user's plain
files, nothing reaches outside the folder, `:ro` holds against root in the
guest, volumes have one writer at a time (docs/mounts.md)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

import microbox
from microbox.errors import InvalidSpec, NotFound, StateError
from tests.vm.helpers import mb


def _sh(box: microbox.Box, script: str) -> str:
    r = box.run(["/bin/sh", "-c", script])
    assert r.exit_code == 0, r.stderr
    return r.stdout.decode()


def test_a_host_folder_is_shared_both_ways(rt: microbox.Runtime, tmp_path: Path) -> None:
    (tmp_path / "from-host.txt").write_text("hello from the host\n")
    with rt.boxes.run("busybox", mounts=[f"{tmp_path}:/data", f"{tmp_path}:/fast:cached"],
                      net="none") as box:
        assert _sh(box, "cat /data/from-host.txt /fast/from-host.txt") == \
            "hello from the host\n" * 2
        # cache=loose: Linux 6.1 (Debian 12) says "loose", 6.12 (Debian 13) "cache=0xf"
        opts = _sh(box, "grep ' /fast ' /proc/mounts").split()[3].split(",")
        assert "loose" in opts or "cache=0xf" in opts, opts
        plain = _sh(box, "grep ' /data ' /proc/mounts").split()[3].split(",")
        assert "loose" not in plain and "cache=0xf" not in plain, plain
        _sh(box, "echo from the box > /data/made.txt; mkdir -p /data/dir/sub; "
                 "echo deep > /data/dir/sub/f; ln /data/made.txt /data/hard")
        made = tmp_path / "made.txt"
        assert made.read_text() == "from the box\n"
        assert (tmp_path / "dir" / "sub" / "f").read_text() == "deep\n"
        assert os.stat(made).st_ino == os.stat(tmp_path / "hard").st_ino
        # the box's root made it; on the host it is the invoking user's plain file
        assert made.stat().st_uid == os.geteuid() and _sh(box, "stat -c %u /data/made.txt") \
            == "0\n"
        (tmp_path / "later.txt").write_text("written after the start\n")
        assert _sh(box, "cat /data/later.txt") == "written after the start\n"
        info = box.info().to_json()
        assert info["mounts"] == [{"type": "bind", "source": str(tmp_path), "target": "/data",
                                   "read_only": False},
                                  {"type": "bind", "source": str(tmp_path), "target": "/fast",
                                   "read_only": False, "cached": True}]
        # restored from a template of placeholder 9p devices, the folders behind them
        assert box.info().template is not None


def test_nothing_reaches_outside_the_folder(rt: microbox.Runtime, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "to-etc").symlink_to("/etc")  # a host symlink out of the folder
    (shared / "sub").mkdir()
    with rt.boxes.run("busybox", mounts=[f"{shared}:/data"], net="none", name="walker") as box:
        own = _sh(box, "cat /etc/passwd")
        assert own != Path("/etc/passwd").read_text()
        # a host link out of the folder is never followed on the host (QEMU walks
        # with O_NOFOLLOW): the box gets an error, not the host's /etc
        r = box.run(["cat", "/data/to-etc/passwd"])
        assert r.exit_code != 0 and r.stdout == b""
        # a link the box makes resolves in the box: its own /etc
        _sh(box, "ln -s /etc /data/boxlink")
        assert _sh(box, "cat /data/boxlink/passwd") == own
        assert _sh(box, "cd /data/..; pwd; ls /data/../linuxrc") == "/\n/data/../linuxrc\n"
        # nodes and set-id bits made in the box are plain files on the host
        _sh(box, "mknod /data/disk b 8 0; mknod /data/fifo p; echo x > /data/suid; "
                 "chmod 4755 /data/suid")
        for name in ("disk", "fifo", "suid"):
            st = os.lstat(shared / name)
            assert stat.S_ISREG(st.st_mode), name
            assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), name
        assert _sh(box, "stat -c '%F %a' /data/disk /data/suid") == \
            "block special file 644\nregular file 4755\n"
        # a directory swapped for a symlink to / on the host while the box uses it
        _sh(box, "ls /data/sub/")
        (shared / "sub").rmdir()
        (shared / "sub").symlink_to("/")
        r = box.run(["ls", "/data/sub/"])
        assert r.exit_code != 0 and b"work" not in r.stdout  # no host root listing


def test_read_only_is_the_hosts(rt: microbox.Runtime, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("keep\n")
    with rt.boxes.run("busybox", mounts=[f"{tmp_path}:/ro:ro"], net="none") as box:
        assert _sh(box, "cat /ro/keep.txt") == "keep\n"
        assert box.run(["/bin/sh", "-c", "echo x > /ro/keep.txt"]).exit_code != 0
        # root in the box lifts its own read-only mount; the host still refuses
        assert box.run(["mount", "-o", "remount,rw", "/ro"]).exit_code == 0
        r = box.run(["/bin/sh", "-c", "echo x > /ro/keep.txt; touch /ro/new"])
        assert r.exit_code != 0 and b"Read-only" in r.stderr
    assert (tmp_path / "keep.txt").read_text() == "keep\n"
    assert not (tmp_path / "new").exists()


def test_bad_mounts_fail_before_anything_is_made(rt: microbox.Runtime, tmp_path: Path) -> None:
    for bad, words in [("rel/dir:/data", "absolute path"), ("./x:/data", "$PWD/x"),
                       (f"{tmp_path}/missing:/data", "does not exist"),
                       (f"{tmp_path}:data", "must be absolute"),
                       (f"{tmp_path}:/proc/x", "the box's own"), ("a:b:c:d", "bad -v")]:
        with pytest.raises(InvalidSpec, match=words.replace("$", r"\$")):
            rt.boxes.create("busybox", mounts=[bad])
    r = mb("run", "--rm", "-v", "relative:/x/y:rw:z", "busybox", "--", "true")
    assert r.returncode == 2 and b"-v" in r.stderr
    assert rt.boxes.list(all=True) == [] and rt.volumes.list() == []


def test_a_box_with_mounts_is_not_snapshotted_but_can_be_committed(
        rt: microbox.Runtime, tmp_path: Path) -> None:
    box = rt.boxes.run("busybox", mounts=[f"{tmp_path}:/data"], net="none", detach=True,
                       name="mounted")
    try:
        box = rt.boxes.get("mounted")
        with pytest.raises(StateError, match="microbox commit mounted"):
            box.snapshot()
        with pytest.raises(StateError, match="mounts"):
            box.fork(1)
        assert rt.snapshots.list() == [] and [b.name for b in rt.boxes.list()] == ["mounted"]
        box.stop()
        box.start()  # a later start mounts it again
        assert _sh(box, "ls /data; echo again > /data/again") == ""
        assert (tmp_path / "again").read_text() == "again\n"
    finally:
        rt.boxes.get("mounted").delete(force=True)


def test_volumes_outlive_boxes_with_one_writer_at_a_time(rt: microbox.Runtime) -> None:
    rt.volumes.create("shared-vol", size="64M")
    try:
        # written and never synced: the box's removal shuts it down first, so it is kept
        with rt.boxes.run("busybox", mounts=["shared-vol:/vol"], net="none") as early:
            _sh(early, "echo early > /vol/early")
        writer = rt.boxes.run("busybox", mounts=["shared-vol:/vol"], net="none", detach=True,
                              name="writer")
        writer = rt.boxes.get("writer")
        _sh(writer, "echo kept > /vol/f; sync")
        with pytest.raises(StateError, match="'writer'"):
            rt.boxes.run("busybox", mounts=["shared-vol:/vol"], net="none")
        with pytest.raises(StateError, match="'writer'"):
            rt.boxes.run("busybox", mounts=["shared-vol:/vol:ro"], net="none")
        with pytest.raises(StateError, match="'writer'"):
            rt.volumes.remove("shared-vol")
        writer.delete(force=True)
        with rt.boxes.run("busybox", mounts=["shared-vol:/v:ro"], net="none") as a, \
                rt.boxes.run("busybox", mounts=["shared-vol:/v:ro"], net="none") as b:
            assert _sh(a, "cat /v/f") == _sh(b, "cat /v/f") == "kept\n"
            assert _sh(a, "cat /v/early") == "early\n"
            assert a.run(["touch", "/v/nope"]).exit_code != 0
        listed = json.loads(mb("volume", "ls", "--json").stdout)["data"]
        assert [v["name"] for v in listed] == ["shared-vol"] and listed[0]["boxes"] == []
    finally:
        for b in rt.boxes.list(all=True):
            b.delete(force=True)
        rt.volumes.remove("shared-vol")
    with pytest.raises(NotFound):
        rt.volumes.get("shared-vol")
    # `run -v NAME:...` makes a missing volume, as Docker does
    with rt.boxes.run("busybox", mounts=["auto-made:/a"], net="none") as box:
        assert _sh(box, "df -k /a | tail -1 | awk '{print ($2 > 1000000)}'") == "1\n"
    assert rt.volumes.get("auto-made").size == 10 << 30
    rt.volumes.remove("auto-made")


def test_a_pool_of_the_shape_is_left_alone_and_the_box_warm_starts(
        rt: microbox.Runtime, tmp_path: Path) -> None:
    pool = rt.pools.add("busybox", size=1, net="none")
    try:
        with rt.boxes.run("busybox", mounts=[f"{tmp_path}:/data"], net="none") as box:
            _sh(box, "echo via-restore > /data/f")
            assert box.info().template is not None  # restored, not the pool's box
        assert rt.pools.get(pool.id).ready == 1
        assert (tmp_path / "f").read_text() == "via-restore\n"
    finally:
        rt.pools.remove(pool.id)
