"""Packs between two data dirs: a box's disk (flattened from its template chain)
and an image, booted from the pack in a fresh MICROBOX_HOME; a corrupt pack
leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import microbox
from tests.vm.helpers import mb, mb_tty


@contextlib.contextmanager
def in_home(home: Path) -> Iterator[None]:
    """Point MICROBOX_HOME (the CLI's and the SDK's) at `home` for a while."""
    old = os.environ["MICROBOX_HOME"]
    os.environ["MICROBOX_HOME"] = str(home)
    try:
        yield
    finally:
        os.environ["MICROBOX_HOME"] = old


def one_line(stderr: bytes) -> str:
    lines = [ln for ln in stderr.decode().splitlines() if not ln.startswith("microbox: verifying")]
    assert len(lines) == 1, lines
    return lines[0]


def test_box_pack_boots_in_another_data_dir(microbox_home: Path, fresh_home: Path,
                                            tmp_path: Path) -> None:
    out = tmp_path / "box.pack"
    with in_home(microbox_home):
        assert mb("run", "-d", "--name", "packsrc", "busybox").returncode == 0
        try:
            w = mb("exec", "packsrc", "--", "sh", "-c",
                   "mkdir -p /srv/data && echo carried over > /srv/data/note")
            assert w.returncode == 0, w.stderr

            refused = mb("pack", "create", "--from-box", "packsrc", "-o", str(out))
            assert refused.returncode == 1
            assert "--stop" in one_line(refused.stderr)
            as_json = json.loads(mb("pack", "create", "--from-box", "packsrc", "-o", str(out),
                                    "--json").stdout)
            assert as_json["exit_code"] == 1 and "--stop" in as_json["error"]["recovery"]
            declined = mb_tty("pack", "create", "--from-box", "packsrc", "-o", str(out),
                              answer=b"n\n")
            assert declined.returncode == 1 and not out.exists()
            state = json.loads(mb("inspect", "packsrc", "--json").stdout)["data"]
            assert state["status"] == "running" and state["template"]  # a warm chain

            done = mb("pack", "create", "--from-box", "packsrc", "--stop", "-o", str(out),
                      "--json")
            assert done.returncode == 0, done.stdout
            made = json.loads(done.stdout)["data"]
            assert made["kind"] == "box" and made["source"]["box"] == "packsrc"
            assert made["bytes"] == out.stat().st_size < 20 << 20
            state = json.loads(mb("inspect", "packsrc", "--json").stdout)["data"]
            assert state["status"] == "stopped"
        finally:
            mb("delete", "-f", "packsrc")

    r = mb("run", "--rm", "--from", str(out), "--", "cat", "/srv/data/note")
    assert (r.returncode, r.stdout) == (0, b"carried over\n"), r.stderr
    (image,) = json.loads(mb("image", "ls", "--json").stdout)["data"]
    assert image["name"].startswith("pack-packsrc:") and image["source"].startswith("pack ")
    assert json.loads(mb("ls", "-a", "--json").stdout)["data"] == []


def test_image_pack_round_trip(microbox_home: Path, fresh_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "busybox.pack"
    with in_home(microbox_home):
        r = mb("pack", "create", "--image", "busybox", "-o", str(out))
        assert r.returncode == 0, r.stderr

    with microbox.Runtime() as rt:  # the SDK, in the fresh data dir
        with rt.boxes.run(from_pack=out, env={"X": "from-sdk"}, cold=True) as box:
            res = box.run(["sh", "-c", "echo $X; grep -c ^root: /etc/passwd"])
            assert res.stdout == b"from-sdk\n1\n"
        made = rt.boxes.create(from_pack=out, name="again", cpus=2)
        assert made.spec.cpus == 2 and made.record.image.startswith("pack-busybox:")
        made.delete()
        assert len(rt.images.list()) == 1  # the same pack twice lands on one image
    r = mb("create", "--from", str(out), "--start", "--name", "cli")
    assert r.returncode == 0, r.stderr
    try:
        assert mb("exec", "cli", "--", "ls", "/bin/sh").stdout == b"/bin/sh\n"
    finally:
        mb("delete", "-f", "cli")


def test_corrupt_pack_creates_nothing(microbox_home: Path, fresh_home: Path,
                                      tmp_path: Path) -> None:
    good = tmp_path / "good.pack"
    with in_home(microbox_home):
        assert mb("pack", "create", "--image", "busybox", "-o", str(good)).returncode == 0
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x55  # in the disk's compressed data
    bad = tmp_path / "bad.pack"
    bad.write_bytes(bytes(data))
    for argv in (["create", "--from", str(bad)], ["run", "--rm", "--from", str(bad), "--",
                                                   "true"]):
        r = mb(*argv)
        assert r.returncode == 1
        assert "is not a usable microbox pack" in one_line(r.stderr)
    assert json.loads(mb("ls", "-a", "--json").stdout)["data"] == []
    assert json.loads(mb("image", "ls", "--json").stdout)["data"] == []
    blobs = fresh_home / "images" / "blobs"
    assert not blobs.exists() or not any(blobs.iterdir())
