"""tar_get, tar_put and connect against a scripted agent: the frames they send,
how they read the answers, and the one sentence an older agent gets."""

from __future__ import annotations

import io
import socket
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from microbox.agent import bulk
from microbox.agent.channel import Channel
from microbox.agent.protocol import Decoder, Frame, T, encode
from microbox.errors import AgentError, ConnectFailed, GuestNotFound
from tests.unit.test_channel import open_channel, serve

ALL = ["exec", "files", "cancel", "connect", "tar"]

Script = Callable[[socket.socket, Iterator[Frame]], None]


def agent(tmp: Path, script: Script, capabilities: list[str] = ALL) -> Channel:
    """A channel to a peer that answers HELLO with `capabilities`, then runs `script`."""
    def peer(conn: socket.socket, session: str) -> None:
        conn.sendall(encode(T.HELLO_REPLY, 0, {"version": 1, "session": session,
                                              "capabilities": capabilities, "agent": "test"}))

        def frames() -> Iterator[Frame]:
            dec = Decoder()
            while data := conn.recv(65536):
                yield from dec.feed(data)

        script(conn, frames())
        conn.recv(1)

    serve(tmp, peer)
    return open_channel(tmp)


def small_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("tree/file")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    return buf.getvalue()


def test_tar_get_yields_the_data(tmp_path: Path) -> None:
    raw = small_tar()

    def script(conn: socket.socket, frames: Iterator[Frame]) -> None:
        req = next(frames)
        assert req.type == T.TAR_GET and req.json() == {"path": "/root/tree"}
        conn.sendall(encode(T.DATA, req.stream, raw[:100]) + encode(T.DATA, req.stream, raw[100:])
                     + encode(T.DATA, req.stream) + encode(T.DONE, req.stream, {}))

    ch = agent(tmp_path, script)
    got = b"".join(bulk.tar_get(ch, "/root/tree"))
    assert got == raw
    with tarfile.open(fileobj=io.BytesIO(got)) as tf:
        assert tf.getnames() == ["tree/file"]
    ch.close()


def test_tar_get_missing_and_broken(tmp_path: Path) -> None:
    def script(conn: socket.socket, frames: Iterator[Frame]) -> None:
        req = next(frames)
        conn.sendall(encode(T.ERROR, req.stream, {"kind": "not_found", "message": "no such"}))
        req = next(frames)
        conn.sendall(encode(T.DATA, req.stream, b"x" * 512)
                     + encode(T.ERROR, req.stream, {"kind": "io", "message": "read error"}))
        # A stream the agent ended is not cancelled: the next frame is a new request.
        assert next(frames).type == T.PING

    ch = agent(tmp_path, script)
    with pytest.raises(GuestNotFound, match="not_found"):
        list(bulk.tar_get(ch, "/nope"))
    with pytest.raises(AgentError, match="read error"):
        list(bulk.tar_get(ch, "/broken"))
    ch.stream().send(T.PING, b"")
    ch.close()


def test_closing_tar_get_early_cancels(tmp_path: Path) -> None:
    def script(conn: socket.socket, frames: Iterator[Frame]) -> None:
        req = next(frames)
        conn.sendall(encode(T.DATA, req.stream, b"a" * 10))
        cancel = next(frames)
        assert (cancel.type, cancel.stream, cancel.json()) == (T.CANCEL, req.stream, {})

    ch = agent(tmp_path, script)
    chunks = bulk.tar_get(ch, "/big")
    assert next(chunks) == b"a" * 10
    chunks.close()
    ch.close()


def test_tar_put_sends_chunks_and_waits_for_done(tmp_path: Path) -> None:
    got = bytearray()

    def script(conn: socket.socket, frames: Iterator[Frame]) -> None:
        req = next(frames)
        assert req.type == T.TAR_PUT and req.json() == {"path": "/srv"}
        for frame in frames:
            assert frame.type == T.DATA and len(frame.payload) <= 64 * 1024
            if not frame.payload:
                break
            got.extend(frame.payload)
        conn.sendall(encode(T.DONE, req.stream, {}))

    ch = agent(tmp_path, script)
    bulk.tar_put(ch, "/srv", [b"x" * 100_000, b"", b"y" * 10])
    assert bytes(got) == b"x" * 100_000 + b"y" * 10
    ch.close()


def test_tar_put_stops_at_an_early_error(tmp_path: Path) -> None:
    def script(conn: socket.socket, frames: Iterator[Frame]) -> None:
        req = next(frames)
        conn.sendall(encode(T.ERROR, req.stream, {"kind": "not_found", "message": "/srv: gone"}))
        for _ in frames:  # as the agent does, read (and drop) what the host still sends,
            pass  # until it closes: a peer that hung up would fail the send, not the upload

    ch = agent(tmp_path, script)

    def chunks() -> Iterator[bytes]:
        while True:  # endless: only the ERROR ends the upload
            yield b"z" * 1000

    with pytest.raises(GuestNotFound, match="gone"):
        bulk.tar_put(ch, "/srv", chunks())
    ch.close()


def test_connect(tmp_path: Path) -> None:
    def script(conn: socket.socket, frames: Iterator[Frame]) -> None:
        req = next(frames)
        assert req.type == T.CONNECT and req.json() == {"port": 8080, "host": "127.0.0.1"}
        conn.sendall(encode(T.CONNECTED, req.stream, {}))
        data = next(frames)
        assert (data.type, data.payload) == (T.DATA, b"ping")
        conn.sendall(encode(T.DATA, req.stream, b"pong") + encode(T.DATA, req.stream))
        req = next(frames)
        assert req.json() == {"port": 9, "host": "::1"}
        conn.sendall(encode(T.ERROR, req.stream, {"kind": "refused",
                                                  "message": "connection refused"}))

    ch = agent(tmp_path, script)
    stream = bulk.connect(ch, 8080)
    stream.send(T.DATA, b"ping")
    assert stream.recv(5).payload == b"pong"
    assert stream.recv(5).payload == b""
    stream.close()
    with pytest.raises(ConnectFailed, match="cannot connect to ::1:9 in the box: connection re"):
        bulk.connect(ch, 9, "::1")
    ch.close()


def test_older_agent_gets_one_sentence(tmp_path: Path) -> None:
    ch = agent(tmp_path, lambda conn, frames: None, capabilities=["exec", "files"])
    for call in (lambda: bulk.tar_get(ch, "/x"), lambda: bulk.tar_put(ch, "/x", []),
                 lambda: bulk.connect(ch, 80)):
        with pytest.raises(AgentError) as exc:
            call()
        message = str(exc.value)
        assert "restart the box to get the new agent" in message and message.count(".") == 1
    ch.close()
