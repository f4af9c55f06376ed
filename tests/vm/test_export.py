"""`box.export` and `microbox export` on real boxes: the root disk only, with
owners, modes, hard links, symlinks, fifos and devices; a stopped box; the CLI's
file, stdout and terminal rules."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import tarfile
from pathlib import Path

import microbox
from tests.vm.helpers import CLI, mb

SETUP = ("set -e; mkdir -p /srv/d; echo hi > /srv/d/f; chown 1000:1001 /srv/d/f; "
         "chmod 640 /srv/d/f; ln /srv/d/f /srv/hard; ln -s d/f /srv/sym; mkfifo /srv/fifo; "
         "mknod /srv/null c 1 3; chmod 711 /srv/d; echo gone > /tmp/in-tmpfs; "
         "echo gone > /run/in-tmpfs")
MOUNTS = ("proc", "sys", "dev", "tmp", "run")


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: m for m in tf.getmembers()}


def check_tree(data: bytes) -> None:
    got = members(data)
    f = got["./srv/d/f"]
    assert (f.type, f.mode, f.uid, f.gid, f.size) == (tarfile.REGTYPE, 0o640, 1000, 1001, 3)
    assert got["./srv/d"].mode == 0o711
    hard = got["./srv/hard"]
    assert hard.islnk() and hard.linkname == "./srv/d/f"  # the first name walked
    assert got["./srv/sym"].issym() and got["./srv/sym"].linkname == "d/f"
    assert got["./srv/fifo"].isfifo()
    null = got["./srv/null"]
    assert null.ischr() and (null.devmajor, null.devminor) == (1, 3)
    assert got["./bin/busybox"].isreg() and got["./bin/sh"].issym()
    for mount in MOUNTS:  # the mount points, and nothing under them
        assert got[f"./{mount}"].isdir()
        assert not [n for n in got if n.startswith(f"./{mount}/")], mount
    assert got["./etc/machine-id"].isreg()


def test_export_is_the_root_disk_only(rt: microbox.Runtime) -> None:
    with rt.boxes.run("busybox", net="none") as box:
        assert box.run(["sh", "-c", SETUP]).exit_code == 0
        buf = io.BytesIO()
        report = box.export(buf)
    assert report.bytes == len(buf.getvalue()) and not report.started
    check_tree(buf.getvalue())


def test_export_of_a_stopped_box_and_the_cli(rt: microbox.Runtime, tmp_path: Path) -> None:
    box = rt.boxes.create("busybox", name="exp", net="none", start=True)
    try:
        assert box.run(["sh", "-c", SETUP]).exit_code == 0
        out = tmp_path / "root.tar"
        r = mb("export", "exp", "-o", str(out))
        assert r.returncode == 0 and r.stdout == b"", r.stderr.decode()
        check_tree(out.read_bytes())
        assert not [p for p in tmp_path.iterdir() if p.name != "root.tar"]  # no temporary
        r = mb("export", "exp")  # stdout is a pipe here
        assert r.returncode == 0, r.stderr.decode()
        assert set(members(r.stdout)) == set(members(out.read_bytes()))
        box.stop()
        buf = io.BytesIO()
        report = box.export(buf)
        assert report.started and box.reload().status == "stopped"
        check_tree(buf.getvalue())
        r = mb("export", "--json", "exp", "-o", str(out))
        assert r.returncode == 0 and b'"started": true' in r.stdout, r.stderr.decode()
    finally:
        box.delete(force=True)


def test_export_refuses_a_terminal_and_unknown_boxes(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    try:
        p = subprocess.run([*CLI, "export", "anything"], stdout=slave, stderr=subprocess.PIPE,
                           env=os.environ.copy(), timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == 2
    assert b"refusing to write a tar to a terminal" in p.stderr
    r = mb("export", "nosuchbox", "-o", str(tmp_path / "x.tar"))
    assert r.returncode == 1 and b"microbox list --all" in r.stderr
    assert not list(tmp_path.iterdir())
