"""The qcow2 overlay writer, judged by QEMU's own tools: `qemu-img check` and
`info` accept what it writes, its header says what `qemu-img create` says, and
`qemu-io` reads the backing file through it and writes into it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from microbox.vmm import qcow2


def qemu_img(*args: str) -> str:
    done = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def qemu_io(disk: Path, command: str) -> None:
    done = subprocess.run(["qemu-io", "-c", command, str(disk)], capture_output=True,
                          text=True)
    assert done.returncode == 0 and "fail" not in done.stdout.lower(), done.stdout + done.stderr


@pytest.mark.parametrize("size", [3 << 20, 512 << 20, (512 << 20) + 1, 20 << 30])
def test_overlay_of_a_raw_file(tmp_path: Path, size: int) -> None:
    base = tmp_path / "base.raw"
    with open(base, "wb") as f:
        f.truncate(size)
        f.seek(1 << 20)
        f.write(b"\xcd" * 65536)
    mine, ref = tmp_path / "mine.qcow2", tmp_path / "ref.qcow2"
    qcow2.create_overlay(base, mine)
    qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(ref))
    assert "No errors" in qemu_img("check", str(mine))
    info = json.loads(qemu_img("info", "--output=json", str(mine)))
    assert (info["format"], info["virtual-size"], info["backing-filename"],
            info["backing-filename-format"]) == ("qcow2", -(-size // 512) * 512, str(base),
                                                 "raw")
    got, want = mine.read_bytes(), ref.read_bytes()
    # the same header but for where the backing name sits (qemu-img also writes
    # an optional table of feature names before it)
    assert got[:8] == want[:8] and got[16:112] == want[16:112]
    assert len(got) == len(want)
    assert got[1 << 16:] == want[1 << 16:]  # refcounts and the L1 table
    qemu_io(mine, "read -P 0xcd 1M 64k")  # through to the backing file
    qemu_io(mine, "write -P 0xab 2M 4k")
    qemu_io(mine, "read -P 0xab 2M 4k")
    assert "No errors" in qemu_img("check", str(mine))
    assert base.stat().st_size == size  # the backing file is never written


def test_overlay_of_a_qcow2_file_replaces_what_was_there(tmp_path: Path) -> None:
    base = tmp_path / "template.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(base), "256M")
    qemu_io(base, "write -P 0x5a 0 64k")
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"an old disk")
    qcow2.create_overlay(base, disk, "qcow2")
    info = json.loads(qemu_img("info", "--output=json", str(disk)))
    assert (info["virtual-size"], info["backing-filename-format"]) == (256 << 20, "qcow2")
    qemu_io(disk, "read -P 0x5a 0 64k")


def test_bad_backing_files_are_refused(tmp_path: Path) -> None:
    not_qcow2 = tmp_path / "plain"
    not_qcow2.write_bytes(b"x" * 100)
    with pytest.raises(qcow2.Qcow2Error, match="not a qcow2 file"):
        qcow2.create_overlay(not_qcow2, tmp_path / "d.qcow2", "qcow2")
    with pytest.raises(qcow2.Qcow2Error, match="not raw or qcow2"):
        qcow2.create_overlay(not_qcow2, tmp_path / "d.qcow2", "vmdk")
    with pytest.raises(qcow2.Qcow2Error, match="1 to 1023 bytes"):
        qcow2.overlay_bytes("x" * 1024, "raw", 1 << 20)
    assert not (tmp_path / "d.qcow2").exists()


def test_backing_file_reads_what_qemu_img_wrote(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(b"\0" * 65536)
    made = tmp_path / "made.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(made))
    assert qcow2.backing_file(made) == str(base)
    plain = tmp_path / "plain.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(plain), "1M")
    assert qcow2.backing_file(plain) is None
    with pytest.raises(qcow2.Qcow2Error):
        qcow2.backing_file(base)
