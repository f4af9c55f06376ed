"""`image import`, `ls`, `inspect`, `tag`, `rm`, `prune`, without a VM (a box that
is created but not started holds its image like a running one)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

from tests.images import ext4
from tests.oci import E, layer_tar
from tests.vm.helpers import mb


def ok(*args: str, input: bytes | None = None) -> Any:
    r = mb(*args, "--json", input=input)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)["data"]


def rootfs_tar() -> bytes:
    return layer_tar([E("etc", "dir"), E("etc/motd", data=b"imported\n"),
                      E("home", "dir", uid=1000, gid=1000, mode=0o700)])


def test_import_directory_tarball_and_stdin(own_home: Path, tmp_path: Path) -> None:
    (tmp_path / "root" / "etc").mkdir(parents=True)
    (tmp_path / "root" / "etc" / "motd").write_text("from a dir\n")
    os.symlink("motd", tmp_path / "root" / "etc" / "link")
    d = ok("image", "import", str(tmp_path / "root"), "--name", "fromdir")
    image = own_home / "images" / "blobs" / f"{d['digest']}.ext4"
    assert ext4.cat(image, "/etc/motd") == b"from a dir\n" and ext4.clean(image)
    (tmp_path / "root.tar.gz").write_bytes(gzip.compress(rootfs_tar()))
    t = ok("image", "import", str(tmp_path / "root.tar.gz"), "--name", "fromtar:1")
    s = ok("image", "import", "-", "--name", "fromstdin", input=rootfs_tar())
    assert t["digest"] == s["digest"]  # same tree, same content address, one file
    image = own_home / "images" / "blobs" / f"{s['digest']}.ext4"
    home = ext4.ls(image, "/")["home"]
    assert (home.uid, home.gid, home.mode & 0o777) == (1000, 1000, 0o700)
    names = {i["name"]: i for i in ok("image", "ls")}
    assert set(names) == {"fromdir", "fromtar:1", "fromstdin"}
    assert all(i["disk_bytes"] > 0 for i in names.values())
    r = mb("image", "import", "-", "--name", "bad", input=b"not a tar at all" * 100)
    assert r.returncode == 2 and b"cannot import" in r.stderr
    r = mb("image", "import", str(tmp_path / "nope"), "--name", "x")
    assert r.returncode == 2


def test_tag_rm_in_use_and_prune(own_home: Path, tmp_path: Path) -> None:
    img = ok("image", "import", "-", "--name", "base", input=rootfs_tar())
    ok("image", "tag", "base", "copy:2")
    assert ok("image", "inspect", "copy:2")["digest"] == img["digest"]
    box = ok("create", "copy:2")["name"]
    r = mb("image", "rm", "copy:2")
    assert r.returncode == 1
    assert r.stderr.decode() == (f"microbox: image 'copy:2' is used by box {box}; run "
                                 "'microbox image rm -f copy:2' to remove the name anyway.\n")
    assert ok("image", "inspect", "base")["boxes"] == [box]
    ok("image", "rm", "-f", "copy:2", "base")
    blob = own_home / "images" / "blobs" / f"{img['digest']}.ext4"
    assert blob.exists()  # the box's disk is backed by it
    ok("image", "prune")
    assert blob.exists()
    ok("delete", box)
    assert f"{img['digest']}.ext4" in ok("image", "prune")["removed"]
    assert not blob.exists()


def test_prune_all_keeps_images_in_use(own_home: Path) -> None:
    ok("image", "import", "-", "--name", "used", input=rootfs_tar())
    ok("image", "import", "-", "--name", "unused",
       input=layer_tar([E("other", data=b"x")]))
    box = ok("create", "used")["name"]
    removed = ok("image", "prune", "-a")["removed"]
    assert "unused" in removed and "used" not in removed
    assert [i["name"] for i in ok("image", "ls")] == ["used"]
    ok("delete", box)
