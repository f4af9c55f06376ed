"""The layer flattener on hand-made tar layers: whiteouts, opaque dirs, type
changes, hard links, ownership, modes, xattrs, gzip/zstd/plain, digest checks."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from microbox.errors import BuildError
from microbox.images import flatten
from tests.oci import E, compress, layer_tar, sha

CONTENT: dict[str, str] = {}


def flat(tmp_path: Path, layers: list[list[E]], how: str = "gzip") -> dict[str, tarfile.TarInfo]:
    tars = []
    for i, entries in enumerate(layers):
        tar = layer_tar(entries)
        blob = tmp_path / f"blob{i}"
        blob.write_bytes(compress(tar, how))
        out = tmp_path / f"layer{i}.tar"
        flatten.spool(flatten.Layer(blob, sha(blob.read_bytes()), sha(tar)), out)
        tars.append(out)
    buf = io.BytesIO()
    flatten.write_tar(flatten.read_tree(tars), tars, buf)
    buf.seek(0)
    result = {}
    with tarfile.open(fileobj=buf, mode="r:") as tf:
        for m in tf.getmembers():
            if m.isreg():
                f = tf.extractfile(m)
                assert f is not None
                CONTENT[m.name] = f.read().decode()
            result[m.name] = m
    return result


def data(tree: dict[str, tarfile.TarInfo], path: str) -> str:
    assert tree[path].isreg()
    return CONTENT[path]


@pytest.mark.parametrize("how", ["gzip", "zstd", "none"])
def test_layers_apply_in_order(tmp_path: Path, how: str) -> None:
    tree = flat(tmp_path, [
        [E("etc", "dir"), E("etc/a", data=b"one"), E("etc/b", data=b"keep")],
        [E("etc/a", data=b"two")],
    ], how)
    assert data(tree, "etc/a") == "two" and data(tree, "etc/b") == "keep"
    assert list(tree) == ["etc", "etc/a", "etc/b"]  # parents first, sorted


def test_whiteout_removes_a_lower_file_and_subtree(tmp_path: Path) -> None:
    tree = flat(tmp_path, [
        [E("a", "dir"), E("a/x", data=b"x"), E("d", "dir"), E("d/deep", "dir"),
         E("d/deep/f", data=b"f")],
        [E("a/.wh.x", "whiteout"), E(".wh.d", "whiteout")],
    ])
    assert set(tree) == {"a"}


def test_opaque_dir_hides_lower_children_only(tmp_path: Path) -> None:
    tree = flat(tmp_path, [
        [E("o", "dir"), E("o/old", data=b"old"), E("o/sub", "dir"), E("o/sub/x", data=b"x")],
        [E("o/new", data=b"new"), E("o/.wh..wh..opq", "whiteout"), E("o/sub", "dir")],
    ])
    assert set(tree) == {"o", "o/new", "o/sub"}


def test_type_changes(tmp_path: Path) -> None:
    tree = flat(tmp_path, [
        [E("d", "dir"), E("d/child", data=b"c"), E("f", data=b"file"), E("s", "symlink", link="f")],
        [E("d", data=b"now a file"), E("f", "dir"), E("f/in", data=b"in"), E("s", data=b"real")],
    ])
    assert tree["d"].isreg() and data(tree, "d") == "now a file" and "d/child" not in tree
    assert tree["f"].isdir() and data(tree, "f/in") == "in"
    assert tree["s"].isreg()


def test_directory_over_directory_keeps_children_and_takes_new_metadata(tmp_path: Path) -> None:
    tree = flat(tmp_path, [
        [E("d", "dir", mode=0o755), E("d/x", data=b"x")],
        [E("d", "dir", mode=0o700, uid=1000, gid=1000)],
    ])
    assert "d/x" in tree
    assert (tree["d"].mode, tree["d"].uid, tree["d"].gid) == (0o700, 1000, 1000)


def test_hardlinks_symlinks_ownership_modes_setuid_xattrs(tmp_path: Path) -> None:
    tree = flat(tmp_path, [
        [E("bin", "dir"), E("bin/tool", data=b"T", mode=0o4755, uid=0),
         E("bin/alias", "hardlink", link="bin/tool"), E("bin/sym", "symlink", link="tool"),
         E("home", "dir"), E("home/app", "dir", uid=1000, gid=1000, mode=0o750),
         E("home/app/f", data=b"mine", uid=1000, gid=1000, mode=0o600,
           xattrs={"user.note": "hello"}),
         E("fifo", "fifo")],
    ])
    assert tree["bin/tool"].mode == 0o4755
    # one inode: the first path in sorted order carries the data, the other links to it
    assert data(tree, "bin/alias") == "T" and tree["bin/alias"].mode == 0o4755
    assert tree["bin/tool"].islnk() and tree["bin/tool"].linkname == "bin/alias"
    assert tree["bin/sym"].issym() and tree["bin/sym"].linkname == "tool"
    f = tree["home/app/f"]
    assert (f.uid, f.gid, f.mode) == (1000, 1000, 0o600)
    assert f.pax_headers["SCHILY.xattr.user.note"] == "hello"
    assert tree["fifo"].isfifo()


def test_hardlink_keeps_content_when_its_target_is_replaced(tmp_path: Path) -> None:
    tree = flat(tmp_path, [
        [E("a", data=b"old"), E("b", "hardlink", link="a")],
        [E("a", data=b"new")],
    ])
    assert data(tree, "a") == "new"
    assert tree["b"].isreg() and data(tree, "b") == "old"


def test_missing_parents_are_made_and_paths_are_normalized(tmp_path: Path) -> None:
    tree = flat(tmp_path, [[E("./x/y/z", data=b"z"), E("/abs", data=b"a")]])
    assert tree["x"].isdir() and tree["x/y"].isdir() and data(tree, "x/y/z") == "z"
    assert "abs" in tree


def test_path_outside_the_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="outside the image root"):
        flat(tmp_path, [[E("../escape", data=b"x")]])


def test_hardlink_to_nothing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="hard-links"):
        flat(tmp_path, [[E("b", "hardlink", link="missing")]])


def test_a_corrupt_layer_is_refused(tmp_path: Path) -> None:
    tar = layer_tar([E("f", data=b"x" * 1000)])
    blob = tmp_path / "blob"
    blob.write_bytes(compress(tar, "gzip"))
    good = sha(blob.read_bytes())
    blob.write_bytes(blob.read_bytes()[:-9] + b"\0" * 9)
    with pytest.raises(BuildError):
        flatten.spool(flatten.Layer(blob, good), tmp_path / "out.tar")
    blob.write_bytes(compress(tar, "gzip"))
    with pytest.raises(BuildError, match="diff_id"):
        flatten.spool(flatten.Layer(blob, good, sha(b"other")), tmp_path / "out.tar")
