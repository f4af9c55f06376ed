"""TAR_GET, TAR_PUT and CONNECT against the real agent in a box, and the
loopback interface it brings up at boot."""

from __future__ import annotations

import calendar
import io
import tarfile
import time
from pathlib import Path

import pytest

import microbox
from microbox.agent import bulk
from microbox.agent.channel import Stream
from microbox.agent.protocol import T
from microbox.errors import AgentError, ConnectFailed, GuestNotFound
from microbox.sdk.box import Box

T1 = calendar.timegm((2021, 2, 3, 4, 5, 6))
T2 = calendar.timegm((2020, 1, 1, 0, 0, 0))


def sh(box: Box, script: str) -> str:
    r = box.run(["sh", "-c", script])
    assert r.exit_code == 0, r.stderr
    return r.stdout.decode()


def listing(box: Box, root: str) -> list[str]:
    """Type, mode, owner, mtime and link target of every path under root."""
    out = sh(box, f"cd {root} && find . | sort | while read -r p; do "
                  "stat -c '%n %F %a %u %g %Y' \"$p\"; "
                  "[ -L \"$p\" ] && readlink \"$p\"; done; true")
    return out.splitlines()


def test_tar_round_trip_keeps_modes_mtimes_owners_and_links(tmp_path: Path) -> None:
    with microbox.Runtime() as rt, rt.boxes.run("busybox") as box:
        sh(box, "mkdir -p /root/t/sub/empty && printf hello > /root/t/sub/f"
                " && chown 123:456 /root/t/sub/f && chmod 4750 /root/t/sub/f"
                " && ln -s sub/f /root/t/link && ln -s /etc /root/t/abs && mkfifo /root/t/fifo"
                " && touch -h -d '2021-02-03 04:05:06' /root/t/sub/f /root/t/link"
                " && touch -d '2020-01-01 00:00:00' /root/t/sub")
        ch = box._session()
        raw = b"".join(bulk.tar_get(ch, "/root/t"))
        with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
            m = {x.name: x for x in tf.getmembers()}
            assert sorted(m) == ["t", "t/abs", "t/fifo", "t/link", "t/sub", "t/sub/empty",
                                 "t/sub/f"]
            f = m["t/sub/f"]
            assert (f.isreg(), f.mode, f.uid, f.gid, f.mtime) == (True, 0o4750, 123, 456, T1)
            assert tf.extractfile(f).read() == b"hello"  # type: ignore[union-attr]
            assert (m["t/link"].issym(), m["t/link"].linkname, m["t/link"].mtime) == (
                True, "sub/f", T1)
            assert (m["t/abs"].linkname, m["t/fifo"].isfifo(), m["t/sub"].mtime) == (
                "/etc", True, T2)

        # Back into another directory of the box: the same tree, down to the mtimes.
        sh(box, "mkdir /root/copy")
        bulk.tar_put(ch, "/root/copy", [raw[i:i + 1000] for i in range(0, len(raw), 1000)])
        assert listing(box, "/root/copy/t") == listing(box, "/root/t")

        # A tar made on the host, with a link and a directory the tar then fills.
        src = tmp_path / "proj"
        (src / "bin").mkdir(parents=True)
        (src / "bin" / "run").write_text("#!/bin/sh\necho ran\n")
        (src / "bin" / "run").chmod(0o751)
        (src / "latest").symlink_to("bin/run")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            tf.add(src, arcname="proj")
        sh(box, "mkdir /srv")
        bulk.tar_put(ch, "/srv", [buf.getvalue()])
        assert sh(box, "/srv/proj/latest; stat -c '%a' /srv/proj/bin/run") == "ran\n751\n"
        mtime = int((src / "bin" / "run").stat().st_mtime)
        assert sh(box, "stat -c %Y /srv/proj/bin/run") == f"{mtime}\n"

        # Nothing leaves the destination: not through .., not through a link.
        for members in ([("../escape", None)], [("etc", "/etc"), ("etc/evil", None)]):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tf:
                for name, target in members:
                    info = tarfile.TarInfo(name)
                    if target is not None:
                        info.type, info.linkname = tarfile.SYMTYPE, target
                    tf.addfile(info, io.BytesIO(b""))
            with pytest.raises(AgentError, match="invalid"):
                bulk.tar_put(ch, "/srv", [buf.getvalue()])
        assert sh(box, "ls /escape /etc/evil 2>&1; true").count("No such file") == 2

        with pytest.raises(GuestNotFound):
            list(bulk.tar_get(ch, "/nope"))
        with pytest.raises(GuestNotFound):
            bulk.tar_put(ch, "/nope", [b""])


def _connect(box: Box, port: int) -> Stream:
    """Connect once the server in the box listens."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return bulk.connect(box._session(), port)
        except ConnectFailed:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _read_all(stream: Stream) -> bytes:
    """DATA up to the guest's end, then DONE."""
    got = b""
    while True:
        frame = stream.recv(10)
        assert frame.type == T.DATA, frame
        if not frame.payload:
            break
        got += frame.payload
    assert stream.recv(10).type == T.DONE
    stream.close()
    return got


def test_connect_reaches_servers_in_the_box() -> None:
    with microbox.Runtime() as rt, rt.boxes.run("busybox") as box:
        with pytest.raises(ConnectFailed, match="connection refused"):
            bulk.connect(box._session(), 1)

        sh(box, "mkdir -p /www && echo hi-from-httpd > /www/index.html"
                " && httpd -p 127.0.0.1:8080 -h /www")
        stream = _connect(box, 8080)
        stream.send(T.DATA, b"GET /index.html HTTP/1.0\r\n\r\n")
        stream.send(T.DATA, b"")
        reply = _read_all(stream)
        assert reply.startswith(b"HTTP/1.") and b" 200 " in reply and b"hi-from-httpd" in reply

        # An echo server: the host's end of input reaches it, its end comes back.
        echo = box.exec(["nc", "-l", "-p", "7777", "-e", "cat"])
        stream = _connect(box, 7777)
        data = bytes(range(256)) * 4096  # 1 MiB
        for i in range(0, len(data), 60000):
            stream.send(T.DATA, data[i:i + 60000])
        stream.send(T.DATA, b"")
        assert _read_all(stream) == data
        assert echo.wait().exit_code == 0


def test_loopback_is_up() -> None:
    with microbox.Runtime() as rt, rt.boxes.run("busybox") as box:
        flags = int(sh(box, "cat /sys/class/net/lo/flags"), 16)
        assert flags & 1, f"lo flags {flags:#x}"
        assert "inet 127.0.0.1/8" in sh(box, "ip addr show lo")
