"""`image push` against real registries on 127.0.0.1: busybox and an imported
tree (owners, modes, hard links, xattrs, machine-id) pushed and pulled back
equal, file for file; a pulled image's config (Labels, ExposedPorts and
StopSignal too) kept through push and pull, with credentials; the errors; and
the throwaway box gone on every path out."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import tarfile
import threading
from pathlib import Path
from typing import IO, Any

import pytest

import microbox
from microbox.errors import HostError, NotFound
from microbox.images import filestore
from microbox.images import push as image_push
from microbox.sdk.aio import AsyncRuntime
from microbox.store.images import Image
from tests.oci import E, Layout, layer_tar
from tests.registry import APP_CONFIG, PASSWORD, USER, Registry, app_layers, busybox_layer
from tests.vm.helpers import free_port, mb

Tree = dict[str, tuple[Any, ...]]
MACHINE_ID = "./etc/machine-id"  # each box writes its own


def tree(rt: microbox.Runtime, image: str) -> Tree:
    """What a box of `image` exports, entry by entry: type, mode, owner, size,
    link target, xattrs, and the mtime (seconds) of what is not a directory."""
    with rt.boxes.run(image, net="none", cold=True) as box:
        buf = io.BytesIO()
        box.export(buf)
    found: Tree = {}
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        for m in tf:
            xattrs = sorted((k, v) for k, v in m.pax_headers.items() if "xattr" in k)
            found[m.name] = (m.type, m.mode, m.uid, m.gid, m.size, m.linkname, xattrs,
                             None if m.isdir() or m.name == MACHINE_ID else int(m.mtime))
    return found


def assert_same_tree(a: Tree, b: Tree) -> None:
    assert a.keys() == b.keys()
    different = {name: (a[name], b[name]) for name in a if a[name] != b[name]}
    assert not different


def layer(image: Image) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    """The members (and data) of the one layer a pulled image was made of."""
    assert len(image.layers) == 1
    data = gzip.decompress(filestore.layer_path(image.layers[0]).read_bytes())
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf:
            f = tf.extractfile(m) if m.isreg() else None
            out[m.name] = (m, f.read() if f else b"")
    return out


def rich_tar() -> bytes:
    """A root file system with what a push must keep."""
    return layer_tar([
        *busybox_layer(),
        E("etc", "dir"), E("etc/machine-id", data=b"uninitialized\n", mode=0o444),
        E("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
        E("srv", "dir", mode=0o711, uid=1000, gid=1000),
        E("srv/owned", data=b"mine\n", uid=1000, gid=1001, mode=0o640),
        E("srv/hard", "hardlink", link="srv/owned"),
        E("srv/sym", "symlink", link="owned"), E("srv/fifo", "fifo", mode=0o600),
        E("srv/tagged", data=b"x", xattrs={"user.microbox": "kept"}),
        E("bin/suid", data=b"#!/bin/sh\n", mode=0o4755), E("tmp", "dir", mode=0o1777)])


def test_push_busybox_and_pull_it_back(rt: microbox.Runtime,
                                       registries: dict[str, Registry]) -> None:
    rt.images.build_builtin("busybox")
    ref = f"{registries['anon'].host}/mine/busybox:1"
    pushed = rt.images.push("busybox", ref)
    assert pushed.ref == ref and pushed.digest.startswith("sha256:")
    back = rt.images.pull(ref)
    assert back.config == rt.images.get("busybox").config
    assert_same_tree(tree(rt, "busybox"), tree(rt, back.name))
    members = layer(back)
    assert "etc/machine-id" not in members  # busybox has none: the box's is left out
    assert "lost+found" not in members and members["."][0].isdir()  # the root: "./"
    assert all(not n.startswith("./") for n in members)
    # the same image pushed again is the same manifest, to the byte
    assert rt.images.push("busybox", f"{registries['anon'].host}/mine/busybox:2").digest == \
        pushed.digest
    assert rt.boxes.list(all=True) == []


def test_push_keeps_owners_links_xattrs_and_the_machine_id(
        rt: microbox.Runtime, registries: dict[str, Registry]) -> None:
    rt.images.import_rootfs(io.BytesIO(rich_tar()), "rich")
    ref = f"{registries['anon'].host}/mine/rich:1"
    rt.images.push("rich", ref)
    back = rt.images.pull(ref)
    original = tree(rt, "rich")
    assert_same_tree(original, tree(rt, back.name))
    # walked first, srv/hard holds the data; srv/owned is a hard link to it
    assert original["./srv/hard"][:5] == (tarfile.REGTYPE, 0o640, 1000, 1001, 5)
    assert original["./srv/owned"][0] == tarfile.LNKTYPE
    assert original["./srv/owned"][5] == "./srv/hard"
    assert original["./srv"][1:4] == (0o711, 1000, 1000)
    assert ("SCHILY.xattr.user.microbox", "kept") in original["./srv/tagged"][6]
    assert original["./bin/suid"][1] == 0o4755
    members = layer(back)
    info, data = members["etc/machine-id"]  # the image's own, not the box's
    assert (data, info.mode) == (b"uninitialized\n", 0o444)
    assert members["srv/owned"][0].islnk() and members["srv/owned"][0].linkname == "srv/hard"
    assert members["srv/tagged"][0].pax_headers["SCHILY.xattr.user.microbox"] == "kept"


def test_push_keeps_the_config_and_uses_credentials(
        fresh_home: Path, registries: dict[str, Registry], tmp_path: Path) -> None:
    config = {**APP_CONFIG, "Labels": {"org.example.team": "boxes", "tier": "test"},
              "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}, "StopSignal": "SIGQUIT"}
    layout = Layout(tmp_path / "layout")
    layout.tag(layout.image(app_layers(), config), "cfg")
    anon, basic = registries["anon"], registries["basic"]
    anon.push(tmp_path / "layout", "cfg", "test/cfg:1")
    with microbox.Runtime() as rt:
        pulled = rt.images.pull(f"{anon.host}/test/cfg:1")
        assert pulled.config.labels == config["Labels"]
        assert pulled.config.exposed_ports == ("53/udp", "8080/tcp")
        assert pulled.config.stop_signal == "SIGQUIT"
        ref = f"{basic.host}/mine/cfg:1"
        with pytest.raises(HostError) as refused:
            rt.images.push(pulled.name, ref)
        assert refused.value.recovery == f"microbox image login {basic.host}"
        assert rt.boxes.list(all=True) == []
        rt.images.login(basic.host, USER, PASSWORD)
        rt.images.push(pulled.name, ref)
        back = rt.images.pull(ref)
        assert back.config == pulled.config
        assert_same_tree(tree(rt, pulled.name), tree(rt, back.name))
        with rt.boxes.run(back.name, net="none", cold=True) as box:
            result = box.run(box.main)
        assert result.stdout == b"hello from the image as app in /home/app/work\n"
    r = mb("image", "inspect", "--json", ref)
    assert json.loads(r.stdout)["data"]["config"]["Labels"] == config["Labels"]


def test_push_errors_name_the_fix(rt: microbox.Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NotFound):
        rt.images.push("nosuch", "127.0.0.1:5000/a/b:1")
    r = mb("image", "push", "nosuch", "127.0.0.1:5000/a/b:1")
    assert r.returncode == 1
    assert r.stderr.decode() == ("microbox: no image named 'nosuch'; "
                                 "run 'microbox image list'.\n")
    r = mb("image", "push", "busybox", "127.0.0.1:5000/a/b@sha256:" + "0" * 64)
    assert r.returncode == 2 and b"cannot push to a digest" in r.stderr

    async def push_async() -> None:
        async with AsyncRuntime() as art:
            await art.images.push("nosuch", "127.0.0.1:5000/a/b:1")

    with pytest.raises(NotFound):
        asyncio.run(push_async())

    rt.images.build_builtin("busybox")
    nowhere = f"127.0.0.1:{free_port()}"
    r = mb("image", "push", "busybox", f"{nowhere}/a/b:1")
    assert r.returncode == 1
    last = r.stderr.decode().splitlines()[-1]  # after the progress lines
    assert last.startswith(f"microbox: cannot reach the registry {nowhere} ("), last
    assert "connection refused" in last
    assert rt.boxes.list(all=True) == []

    def interrupted(raw: IO[bytes], image: Path, out: tarfile.TarFile) -> None:
        assert raw.read(1 << 20)  # the box is exporting
        raise KeyboardInterrupt  # ^C, on the main thread

    monkeypatch.setattr(image_push, "write_layer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rt.images.push("busybox", f"{nowhere}/a/b:1")
    assert rt.boxes.list(all=True) == []
    assert not [p for p in filestore.staging_dir().iterdir() if p.is_dir()]
    assert not [t for t in threading.enumerate() if t.name == "image-push-export"]
