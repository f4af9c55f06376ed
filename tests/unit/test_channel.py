"""The host side of a session against a scripted peer on a real Unix socket.
The real agent covers the same paths in tests/vm; here the peer misbehaves on
purpose: stale frames, foreign nonces, garbage, silence."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from microbox.agent import channel
from microbox.agent.channel import Channel
from microbox.agent.protocol import HEADER, Decoder, Frame, T, encode
from microbox.errors import AgentError, AgentTimeout

Peer = Callable[[socket.socket, str], object]


def serve(tmp: Path, peer: Peer) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(tmp / "port0.sock"))
    srv.listen(1)

    def run() -> None:
        conn, _ = srv.accept()
        dec = Decoder()
        frames: list[Frame] = []
        while not frames:
            frames = dec.feed(conn.recv(4096))
        session = str(frames[0].json()["session"])
        peer(conn, session)
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def open_channel(tmp: Path, timeout: float = 5.0, abort_fd: int | None = None) -> Channel:
    return Channel.open(lambda n: tmp / f"port{n}.sock", lambda n: tmp / f"port{n}.lock", 1,
                        deadline=time.monotonic() + timeout, abort_fd=abort_fd,
                        abort_reason=lambda: "the VM exited")


def reply(session: str, version: int = 1) -> bytes:
    return encode(T.HELLO_REPLY, 0, {"version": version, "session": session,
                                     "capabilities": [], "agent": "test"})


def test_stale_frames_and_foreign_nonces_are_skipped(tmp_path: Path) -> None:
    def peer(conn: socket.socket, session: str) -> None:
        conn.sendall(encode(T.STDOUT, 7, b"old session output") + reply("someone-else")
                     + reply(session))
        conn.recv(1)  # hold the connection until the host closes it

    serve(tmp_path, peer)
    ch = open_channel(tmp_path)
    assert ch.hello["agent"] == "test"
    ch.close()


def test_wrong_version_is_refused(tmp_path: Path) -> None:
    serve(tmp_path, lambda conn, s: conn.sendall(reply(s, version=2)))
    with pytest.raises(AgentError, match="protocol 2"):
        open_channel(tmp_path)


def test_torn_tail_and_garbage_before_the_reply_are_skipped(tmp_path: Path) -> None:
    """What a session begins with may be the rest of a frame meant for a dead client."""
    torn = encode(T.EXIT, 3, {"code": 0, "signal": None, "timed_out": False})[5:]

    def peer(conn: socket.socket, session: str) -> None:
        conn.sendall(torn + HEADER.pack(0xFFFFFFF0, 2, 0) + reply(session))
        conn.recv(1)

    serve(tmp_path, peer)
    ch = open_channel(tmp_path)
    assert ch.hello["session"]
    ch.close()


def test_garbage_alone_times_out(tmp_path: Path) -> None:
    done = threading.Event()

    def peer(conn: socket.socket, session: str) -> None:
        conn.sendall(HEADER.pack(0xFFFFFFF0, 2, 0) + os.urandom(100_000))
        done.wait(5)

    serve(tmp_path, peer)
    with pytest.raises(AgentTimeout):
        open_channel(tmp_path, timeout=0.5)
    done.set()


def hellos(conn: socket.socket) -> Iterator[str]:
    """The session nonce of each HELLO the host sends."""
    dec = Decoder()
    while data := conn.recv(4096):
        for frame in dec.feed(data):
            assert frame.type == T.HELLO
            yield str(frame.json()["session"])


def protocol_error() -> bytes:
    return encode(T.ERROR, 0, {"kind": "protocol", "message": "a frame stopped"})


def test_agent_out_of_sync_gets_a_new_hello(tmp_path: Path) -> None:
    """The agent lost the framing (our HELLO went into a torn frame): it says so, we resend."""
    def peer(conn: socket.socket, first: str) -> None:
        conn.sendall(protocol_error())
        second = next(hellos(conn))
        assert second != first
        conn.sendall(reply(first) + reply(second))  # a late answer to the first is skipped
        conn.recv(1)

    serve(tmp_path, peer)
    ch = open_channel(tmp_path)
    ch.close()


def test_a_hello_with_no_answer_at_all_is_sent_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The swallowed HELLO's ERROR can be lost too (the agent drops writes while the
    port still reports the dead client's hang-up): silence alone brings a new HELLO."""
    monkeypatch.setattr(channel, "RESEND_AFTER", 0.2)

    def peer(conn: socket.socket, first: str) -> None:
        second = next(hellos(conn))  # the first went into a torn frame, unanswered
        assert second != first
        conn.sendall(reply(second))
        conn.recv(1)

    serve(tmp_path, peer)
    started = time.monotonic()
    ch = open_channel(tmp_path)
    assert ch.hello["session"] and time.monotonic() - started < 2
    ch.close()


def test_stale_output_does_not_hold_back_the_resend(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel, "RESEND_AFTER", 0.3)
    stop = threading.Event()

    def peer(conn: socket.socket, first: str) -> None:
        def flood() -> None:  # a dead client's exec keeps writing
            while not stop.is_set():
                conn.sendall(encode(T.STDOUT, 5, b"stale " * 100))
                time.sleep(0.01)
        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        second = next(hellos(conn))
        stop.set()
        flooder.join()
        conn.sendall(reply(second))
        conn.recv(1)

    serve(tmp_path, peer)
    ch = open_channel(tmp_path)
    ch.close()


def test_resends_are_bounded(tmp_path: Path) -> None:
    def peer(conn: socket.socket, session: str) -> None:
        conn.sendall(protocol_error())
        for _ in hellos(conn):
            conn.sendall(protocol_error())

    serve(tmp_path, peer)
    with pytest.raises(AgentError, match="refused the session: a frame stopped"):
        open_channel(tmp_path)


def test_other_errors_refuse_the_session(tmp_path: Path) -> None:
    serve(tmp_path, lambda conn, s: conn.sendall(
        encode(T.ERROR, 0, {"kind": "version", "message": "agent speaks 1"})))
    with pytest.raises(AgentError, match="refused the session: agent speaks 1"):
        open_channel(tmp_path)


def test_silence_times_out(tmp_path: Path) -> None:
    done = threading.Event()
    serve(tmp_path, lambda conn, s: done.wait(5))
    with pytest.raises(AgentTimeout):
        open_channel(tmp_path, timeout=0.3)
    done.set()


def test_abort_fd_ends_the_wait(tmp_path: Path) -> None:
    done = threading.Event()
    serve(tmp_path, lambda conn, s: done.wait(5))
    r, w = os.pipe()
    os.write(w, b"x")
    with pytest.raises(AgentError, match="the VM exited"):
        open_channel(tmp_path, abort_fd=r)
    done.set()
    os.close(r)
    os.close(w)


def test_busy_port_is_skipped(tmp_path: Path) -> None:
    import fcntl

    fd = os.open(tmp_path / "port0.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    with pytest.raises(AgentError, match="in use"):
        open_channel(tmp_path)
    os.close(fd)


def test_malformed_frame_after_handshake_closes_every_stream(tmp_path: Path) -> None:
    go = threading.Event()

    def peer(conn: socket.socket, session: str) -> None:
        conn.sendall(reply(session))
        go.wait(5)
        conn.sendall(HEADER.pack(5, 0x66, 1))
        conn.recv(1)

    serve(tmp_path, peer)
    ch = open_channel(tmp_path)
    stream = ch.stream()
    go.set()
    with pytest.raises(AgentError, match="unknown frame type 0x66"):
        stream.recv(timeout=5)
    with pytest.raises(AgentError):  # and keeps saying so
        stream.recv(timeout=5)
    assert ch.closed
    ch.close()
