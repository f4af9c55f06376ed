"""`image push` without a VM: the layer made from a box's export (what booting
wrote taken back from the image's ext4 file, names without `./`, hard links,
xattrs, no empty lost+found), the OCI layout's digests, and skopeo's errors."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import IO

import pytest

from microbox.errors import AgentError, HostError, UsageError
from microbox.images import oci_layout, push, reference, skopeo
from microbox.images.config import ImageConfig

MTIME = 1_700_000_000


def make_image(tmp: Path) -> Path:
    """An ext4 file of a tree with a machine-id, /proc and /tmp (no /run, /sys, /dev)."""
    root = tmp / "root"
    for d in ("etc", "proc", "tmp", "bin"):
        (root / d).mkdir(parents=True)
    (root / "etc" / "machine-id").write_bytes(b"uninitialized\n")
    os.mkfifo(root / "etc" / "fifo")
    os.chmod(root / "etc" / "machine-id", 0o444)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "proc", 0o555)
    for p in (root / "etc" / "machine-id", root / "etc", root / "proc"):
        os.utime(p, (MTIME, MTIME))
    image = tmp / "image.ext4"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(root), str(image), "8M"],
                   check=True)
    return image


def export_tar() -> bytes:
    """What a box of that image exports: the agent's names, its machine-id, the
    mounts' own metadata, a /run and /sys it made, mke2fs's lost+found."""
    buf = io.BytesIO()

    def add(name: str, kind: bytes = tarfile.DIRTYPE, data: bytes = b"", mode: int = 0o755,
            **kw: object) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime, info.size = kind, mode, 1_800_000_000, len(data)
        for k, v in kw.items():
            setattr(info, k, v)
        tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        add("./")
        add("./bin/")
        add("./bin/a", tarfile.REGTYPE, b"same inode", 0o4755, uid=1000, gid=1000,
            pax_headers={"SCHILY.xattr.user.k": "v\udcff", "comment": "dropped"})
        add("./bin/b", tarfile.LNKTYPE, linkname="./bin/a", mode=0o4755)
        add("./bin/" + "long" * 40, tarfile.SYMTYPE, linkname="a", mode=0o777)
        add("./etc/")
        add("./etc/machine-id", tarfile.REGTYPE, b"0123456789abcdef0123456789abcdef\n",
            0o444)
        add("./lost+found/", mode=0o700)
        add("./proc/", mode=0o555)
        add("./run/")
        add("./sys/", mode=0o555)
        add("./tmp/", mode=0o1777)
        add("./var/")
        add("./var/lost+found/")
        add("./var/lost+found/kept", tarfile.REGTYPE, b"x")
    return buf.getvalue()


def test_layer_takes_back_what_booting_wrote(tmp_path: Path) -> None:
    image = make_image(tmp_path)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        push.write_layer(io.BytesIO(export_tar()), image, tf)
    out.seek(0)
    with tarfile.open(fileobj=out) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert list(members) == [".", "bin", "bin/a", "bin/b", "bin/" + "long" * 40, "etc",
                                 "etc/machine-id", "proc", "tmp", "var", "var/lost+found",
                                 "var/lost+found/kept"]
        mid = members["etc/machine-id"]
        assert (mid.mode, mid.mtime, mid.uid) == (0o444, MTIME, os.getuid())
        data = tf.extractfile(mid)
        assert data is not None and data.read() == b"uninitialized\n"
        assert members["etc"].mtime == MTIME and members["proc"].mtime == MTIME
        assert members["tmp"].mode == 0o1777
        assert members["."].isdir() and members["."].mtime != 1_800_000_000  # the image's
        a, b = members["bin/a"], members["bin/b"]
        assert (a.mode, a.uid, a.gid) == (0o4755, 1000, 1000)
        assert a.pax_headers["SCHILY.xattr.user.k"] == "v\udcff"  # binary, as it came
        assert "comment" not in a.pax_headers
        assert b.islnk() and b.linkname == "bin/a"
        assert members["bin/" + "long" * 40].linkname == "a"


def test_image_entry_reads_the_ext4_file(tmp_path: Path) -> None:
    image = make_image(tmp_path)
    found = push.image_entry(image, "etc/machine-id")
    assert found is not None
    info, data = found
    assert (info.type, info.mode, info.size, data) == (tarfile.REGTYPE, 0o444, 14,
                                                      b"uninitialized\n")
    assert push.image_entry(image, "run") is None
    with pytest.raises(push.Unsupported):
        push.image_entry(image, "etc/fifo")
    entry = push.image_entry(image, "proc")
    assert entry is not None and entry[0].isdir() and entry[0].mode == 0o555


def test_layout_digests_and_config(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    with oci_layout.layer(layout) as (tf, made):
        info = tarfile.TarInfo("hello")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    config = ImageConfig(env={"A": "1"}, cmd=["sh"], labels={"l": "v"},
                         exposed_ports=("80/tcp",), stop_signal="SIGINT")
    written = oci_layout.write_image(layout, made[0], config.to_oci(), "t")
    blobs = layout / "blobs" / "sha256"

    def blob(digest: str) -> bytes:
        data = (blobs / digest.removeprefix("sha256:")).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        return data

    layer = blob(written.layer.digest)
    assert "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest() == \
        written.layer.diff_id
    cfg = json.loads(blob(written.config_digest))
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": [written.layer.diff_id]}
    assert (cfg["architecture"], cfg["os"]) == ("amd64", "linux")
    assert cfg["config"] == {"Env": ["A=1"], "Cmd": ["sh"], "Labels": {"l": "v"},
                             "ExposedPorts": {"80/tcp": {}}, "StopSignal": "SIGINT"}
    assert ImageConfig.from_oci(cfg["config"]) == config
    manifest = json.loads(blob(written.manifest_digest))
    assert manifest["layers"][0]["digest"] == written.layer.digest
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["annotations"] == {oci_layout.REF_NAME: "t"}
    # the same tree and config, the same digests
    again = tmp_path / "again"
    with oci_layout.layer(again) as (tf, made2):
        tf.addfile(info, io.BytesIO(b"hello"))
    assert oci_layout.write_image(again, made2[0], config.to_oci(), "t") == written
    assert not list(blobs.glob(".*"))  # no partial blob left


def test_piped_export_ends_with_its_reader() -> None:
    def half(out: IO[bytes]) -> None:
        out.write(b"x" * 1000)
        raise AgentError("the box went away")

    with pytest.raises(AgentError, match="went away"), push._piped(half) as r, \
            tarfile.open(fileobj=r, mode="r|") as tf:
        tf.getmembers()  # a cut tar: the export's error wins over the reader's

    wrote: list[int] = []

    def endless(out: IO[bytes]) -> None:
        while True:
            out.write(b"\0" * 65536)
            wrote.append(1)

    with pytest.raises(ValueError, match="the reader"), push._piped(endless) as r:
        r.read(10)
        raise ValueError("the reader failed")  # the pipe closes: the export ends
    assert wrote

    def whole(out: IO[bytes]) -> None:
        with tarfile.open(fileobj=out, mode="w|") as tf:
            tf.addfile(tarfile.TarInfo("empty"))
        out.write(b"\0" * 100_000)  # more than a pipe holds, after the tar's end

    with push._piped(whole) as r, tarfile.open(fileobj=r, mode="r|") as tf:
        assert [m.name for m in tf] == ["empty"]


def test_push_errors_name_the_fix() -> None:
    ref = reference.parse("127.0.0.1:5000/a/b:1")
    fix = "microbox image push --insecure b 127.0.0.1:5000/a/b:1"
    denied = skopeo.push_error_for(
        ref, 'time="x" level=fatal msg="writing blob: unauthorized: authentication required"',
        "microbox image login 127.0.0.1:5000", fix)
    assert isinstance(denied, HostError) and denied.recovery == \
        "microbox image login 127.0.0.1:5000"
    down = skopeo.push_error_for(ref, 'msg="pinging container registry 127.0.0.1:5000: '
                                 'Get \\"https://127.0.0.1:5000/v2/\\": dial tcp '
                                 '127.0.0.1:5000: connect: connection refused"', "", fix)
    assert str(down).startswith("cannot reach the registry 127.0.0.1:5000")
    plain = skopeo.push_error_for(ref, 'msg="http: server gave HTTP response to HTTPS client"',
                                  "", fix)
    assert plain.recovery == fix
    with pytest.raises(UsageError, match="cannot push to a digest"):
        push.target("127.0.0.1:5000/a/b@sha256:" + "0" * 64)
