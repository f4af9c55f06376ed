"""The pack format without a VM: round trips through a real store, corrupt bytes,
truncated files, newer versions, malformed manifests, flattening a qcow2 chain."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from microbox import paths
from microbox.errors import NewerPack, PackError
from microbox.images import pack
from microbox.images.config import ImageConfig
from microbox.sdk import Runtime
from microbox.spec import BoxSpec
from microbox.store import images as rows
from microbox.store.db import Database

CONFIG = ImageConfig(env={"GREETING": "hi"}, entrypoint=["/bin/sh", "-c"], cmd=["echo ok"],
                     workdir="/srv", user="1000")
SPEC = BoxSpec(image="tiny", cpus=2, memory_mib=128, env={"A": "1"}, labels={"team": "ci"},
               kernel="/somewhere/vmlinux", cold=True)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    h = tmp_path / "home"
    monkeypatch.setenv("MICROBOX_HOME", str(h))
    yield h


@pytest.fixture
def ext4(tmp_path: Path) -> Path:
    """A small real ext4 (64 MiB, mostly holes) holding a few files."""
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "motd").write_text("packed and back\n")
    (tree / "big").write_bytes(os.urandom(300_000) + bytes(100_000) + b"tail")
    img = tmp_path / "tiny.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(img), "64M"], check=True)
    return img


def make(ext4: Path, out: Path, **kw: Any) -> pack.PackInfo:
    args: dict[str, Any] = {"disk_format": "raw", "kind": "image",
                            "source": {"image": "Tiny:1"}, "config": CONFIG, "spec": SPEC}
    return pack.write(out, ext4, **{**args, **kw})


def debugfs_cat(image: Path, path: str) -> bytes:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True,
                          check=True).stdout


def store_is_empty(home: Path) -> bool:
    blobs = home / "images" / "blobs"
    if blobs.exists() and any(blobs.iterdir()):
        return False
    if not (home / "microbox.db").exists():
        return True
    db = Database(home / "microbox.db")
    try:
        return rows.all_images(db) == []
    finally:
        db.close()


def test_round_trip_through_a_store(home: Path, ext4: Path, tmp_path: Path) -> None:
    info = make(ext4, tmp_path / "tiny.pack")
    assert info.size < 400_000  # 64 MiB disk: holes and zero blocks are not stored
    with tarfile.open(info.path) as tf:
        names = tf.getnames()
    assert names == ["manifest.json", "manifest.json.sha256", "disk.zst"]

    checked = pack.verify(info.path)
    assert checked.manifest == info.manifest
    assert checked.config == CONFIG
    spec = checked.spec(checked.image_name)
    assert (spec.cpus, spec.memory_mib, spec.env, spec.labels, spec.cold) == (
        2, 128, {"A": "1"}, {"team": "ci"}, True)
    assert spec.kernel is None  # a host path: not carried
    assert checked.image_name == f"pack-tiny:{checked.digest[7:19]}"
    assert checked.manifest["requires"]["agent"]["protocol"] >= 1

    db = Database(paths.home() / "microbox.db")
    try:
        image = pack.import_verified(db, checked)
        assert image.name == checked.image_name and image.config == CONFIG
        assert image.path.read_bytes() == ext4.read_bytes()
        assert image.path.stat().st_blocks * 512 < 2 * ext4.stat().st_blocks * 512 + (1 << 20)
        assert debugfs_cat(image.path, "/etc/motd") == b"packed and back\n"
        again = pack.import_verified(db, pack.verify(info.path))  # the same pack twice
        assert again.digest == image.digest
        assert len(list((home / "images" / "blobs").iterdir())) == 1
    finally:
        db.close()


def test_digest_is_a_function_of_the_content(ext4: Path, tmp_path: Path) -> None:
    dense = tmp_path / "dense.ext4"
    subprocess.run(["cp", "--sparse=never", str(ext4), str(dense)], check=True)
    assert dense.stat().st_blocks > 4 * ext4.stat().st_blocks
    a = make(ext4, tmp_path / "a.pack")
    b = make(dense, tmp_path / "b.pack", source={"box": "other"})
    assert a.digest == b.digest
    assert a.disk["extents"] == b.disk["extents"]


def test_a_qcow2_chain_is_flattened(ext4: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(ext4),
                    str(overlay)], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0xab 60M 8k", str(overlay)], check=True,
                   capture_output=True)
    info = make(overlay, tmp_path / "box.pack", disk_format="qcow2", kind="box",
                source={"box": "b1"})
    out = tmp_path / "out.ext4"
    pack.extract_disk(pack.verify(info.path), out)
    data = out.read_bytes()
    base = ext4.read_bytes()
    assert data[60 << 20:(60 << 20) + 8192] == b"\xab" * 8192
    assert data[:60 << 20] == base[:60 << 20]
    assert info.image_name.startswith("pack-b1:")


def member_offset(path: Path, name: str) -> int:
    with tarfile.open(path) as tf:
        return tf.getmember(name).offset_data


@pytest.mark.parametrize("member,expect", [
    ("manifest.json", "checksum of manifest.json does not match"),
    ("manifest.json.sha256", "checksum of manifest.json does not match"),
    ("disk.zst", "checksum of disk.zst does not match"),
])
def test_a_corrupt_byte_is_refused_and_nothing_is_stored(
        home: Path, ext4: Path, tmp_path: Path, member: str, expect: str) -> None:
    info = make(ext4, tmp_path / "tiny.pack")
    data = bytearray(info.path.read_bytes())
    at = member_offset(info.path, member) + 20
    data[at] ^= 0x01
    bad = tmp_path / "bad.pack"
    bad.write_bytes(bytes(data))
    with pytest.raises(PackError, match=expect) as err, Runtime() as rt:
        rt.images.import_pack(bad)
    assert str(err.value).count(".") <= 3 and "\n" not in str(err.value)
    assert store_is_empty(home)


def test_a_damaged_header_is_refused(ext4: Path, tmp_path: Path) -> None:
    info = make(ext4, tmp_path / "tiny.pack")
    data = bytearray(info.path.read_bytes())
    data[0] ^= 0x20  # the first member's name: tar's header checksum fails
    info.path.write_bytes(bytes(data))
    with pytest.raises(PackError, match="not a tar archive"):
        pack.verify(info.path)


def test_truncated_files_are_refused(home: Path, ext4: Path, tmp_path: Path) -> None:
    info = make(ext4, tmp_path / "tiny.pack")
    whole = info.path.read_bytes()
    disk_at = member_offset(info.path, "disk.zst")
    cuts = [0, 100, 700, 1500, disk_at, disk_at + 1000, len(whole) - 11000]
    for cut in cuts:
        short = tmp_path / f"cut-{cut}.pack"
        short.write_bytes(whole[:cut])
        with pytest.raises(PackError, match=r"truncated|not a tar archive"), Runtime() as rt:
            rt.images.import_pack(short)
    assert store_is_empty(home)


def rewrite(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the manifest and write its checksum anew (a pack made otherwise)."""
    with tarfile.open(path) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf]  # type: ignore[union-attr]
    manifest = json.loads(members[0][1])
    change(manifest)
    text = json.dumps(manifest).encode()
    members[0] = (members[0][0], text)
    members[1] = (members[1][0], hashlib.sha256(text).hexdigest().encode())
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for m, data in members:
            m.size = len(data)
            tf.addfile(m, io.BytesIO(data))


def test_a_newer_version_says_so(home: Path, ext4: Path, tmp_path: Path) -> None:
    info = make(ext4, tmp_path / "tiny.pack")

    def newer(m: dict[str, Any]) -> None:
        m["version"] = pack.VERSION + 1
        m["disk"] = "a layout this microbox cannot know"

    rewrite(info.path, newer)
    with pytest.raises(NewerPack) as err, Runtime() as rt:
        rt.images.import_pack(info.path)
    assert f"version {pack.VERSION + 1} pack, made by a newer microbox" in str(err.value)
    assert err.value.recovery == "pip install --upgrade microbox"
    assert store_is_empty(home)


@pytest.mark.parametrize("change,expect", [
    (lambda m: m["disk"]["extents"].append([1 << 40, 4096]), "malformed"),
    (lambda m: m["disk"].__setitem__("data_bytes", 1), "malformed"),
    (lambda m: m["spec"].__setitem__("cpus", "two"), "malformed"),
    (lambda m: m["members"][0].__setitem__("size", 5), "truncated"),
    (lambda m: m.__setitem__("arch", "riscv64"), "holds a disk for riscv64 machines"),
    (lambda m: m.__setitem__("format", "something-else"), "not a microbox pack manifest"),
])
def test_a_malformed_manifest_is_refused(ext4: Path, tmp_path: Path,
                                         change: Callable[[dict[str, Any]], None],
                                         expect: str) -> None:
    info = make(ext4, tmp_path / "tiny.pack")
    rewrite(info.path, change)
    with pytest.raises(PackError, match=expect):
        pack.verify(info.path)


def test_disk_data_that_disagrees_with_its_map_is_refused(ext4: Path, tmp_path: Path) -> None:
    """A pack made consistently (checksums right) whose map and data disagree."""
    info = make(ext4, tmp_path / "tiny.pack")

    def shorter(m: dict[str, Any]) -> None:
        max(m["disk"]["extents"], key=lambda e: e[1])[1] -= 4096
        m["disk"]["data_bytes"] -= 4096

    rewrite(info.path, shorter)
    with pytest.raises(PackError, match="more data than its map"):
        pack.extract_disk(pack.verify(info.path), tmp_path / "x.ext4")


def test_cli_refuses_corrupt_pack_in_one_sentence(home: Path, ext4: Path,
                                                  tmp_path: Path) -> None:
    info = make(ext4, tmp_path / "tiny.pack")
    data = bytearray(info.path.read_bytes())
    data[member_offset(info.path, "disk.zst") + 100] ^= 0xFF
    info.path.write_bytes(bytes(data))
    env = {**os.environ, "MICROBOX_HOME": str(home)}
    r = subprocess.run([sys.executable, "-m", "microbox", "create", "--from", str(info.path),
                        "--json"], capture_output=True, env=env, timeout=60)
    assert r.returncode == 1
    body = json.loads(r.stdout)
    assert body["error"]["type"] == "pack"
    assert "checksum of disk.zst does not match" in body["error"]["message"]
    assert store_is_empty(home)
