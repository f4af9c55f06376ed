"""One session with the guest agent over one virtio-serial port.

A reader thread demultiplexes frames into per-stream bounded queues. When a
consumer falls behind, the reader blocks, the socket fills and the guest's
writes block: memory stays bounded whatever the guest sends.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import queue
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microbox import locks
from microbox.agent.protocol import (
    VERSION,
    ControlScanner,
    Decoder,
    Frame,
    HelloReply,
    ProtocolError,
    T,
    encode,
    untrusted_text,
)
from microbox.errors import AgentError, AgentTimeout, MicroboxError

STREAM_QUEUE = 256
_RECV = 256 * 1024
ENTROPY_BYTES = 64


@dataclass(frozen=True)
class Identity:
    """What makes a booted or restored guest this box (HELLO, docs/protocol.md):
    its hostname and machine-id, and its mounts; fresh entropy goes with them
    every time."""

    hostname: str
    machine_id: str  # 32 lowercase hex digits (a box id)
    mounts: tuple[str, ...] = ()  # KIND:SOURCE:MODE:HEXTARGET (core/boxmounts.py)


class _Closed:
    """Sentinel delivered to every stream when the channel ends."""

    def __init__(self, error: AgentError) -> None:
        self.error = error


class Stream:
    """Frames of one operation (exec, put, get...) in arrival order."""

    def __init__(self, channel: Channel, stream_id: int) -> None:
        self.channel = channel
        self.id = stream_id
        self._q: queue.Queue[Frame | _Closed] = queue.Queue(STREAM_QUEUE)

    def send(self, type_: T, payload: bytes | dict[str, Any] = b"") -> None:
        self.channel.send(encode(type_, self.id, payload))

    def recv(self, timeout: float | None = None) -> Frame:
        """The next frame; AgentError if the channel ends or `timeout` passes."""
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            raise AgentTimeout(f"the guest agent did not answer within {timeout:g} s") from None
        if isinstance(item, _Closed):
            self._q.put(item)  # keep reporting the end to later calls
            raise self.channel.explain(item.error)
        return item

    def poll(self) -> Frame | None:
        """The next frame if one has arrived, else None (without waiting)."""
        try:
            item = self._q.get_nowait()
        except queue.Empty:
            return None
        if isinstance(item, _Closed):
            self._q.put(item)
            raise item.error
        return item

    def close(self) -> None:
        self.channel._forget(self.id)


class Channel:
    """A connected, handshaken session on one agent port."""

    def __init__(self, sock: socket.socket, lock: locks.Lock | None,
                 reply: HelloReply) -> None:
        self._sock = sock
        self._lock = lock  # the port's client lock, held while this session lives
        self.hello = reply  # what the agent is and can do: hello.supports(Capability.TAR)
        self._send_lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._streams_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed: _Closed | None = None
        self._decoder = Decoder()
        # Turns "the connection ended" into what happened to the box (set by
        # the opener, which knows the box); called in the thread that sees it.
        self.on_lost: Callable[[AgentError], MicroboxError] | None = None
        self._lost: MicroboxError | None = None
        self._lost_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_loop, daemon=True, name="agent-rx")
        self._reader.start()

    # -- opening -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        port_sock: Callable[[int], Path],
        port_lock: Callable[[int], Path],
        ports: int,
        *,
        deadline: float,
        identity: Identity | None = None,
        abort_fd: int | None = None,
        abort_reason: Callable[[], str] = lambda: "the VM exited",
    ) -> Channel:
        """Take a free port, connect and handshake before `deadline` (monotonic).

        `abort_fd` (a pidfd of the VMM) ends the wait early when it becomes readable.
        """
        for n in range(ports):
            lock = locks.try_acquire(port_lock(n))
            if lock is None:
                continue
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(str(port_sock(n)))
                    reply = handshake(sock, identity, deadline, abort_fd, abort_reason)
                except OSError as exc:  # a VMM that dies resets the connection
                    sock.close()
                    if abort_fd is not None and select.select([abort_fd], [], [], 2.0)[0]:
                        raise AgentError(abort_reason()) from None
                    raise AgentError(f"lost the connection to the guest agent: {exc}") from None
                except BaseException:
                    sock.close()
                    raise
            except BaseException:
                lock.close()
                raise
            return cls(sock, lock, reply)
        raise AgentError(f"all {ports} agent ports of the box are in use by other clients")

    @classmethod
    def connect(cls, path: Path, deadline: float) -> Channel:
        """A session through a box's shim (its mux socket). OSError from the
        connect itself (no shim listens); AgentError from the handshake."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            try:
                reply = handshake(sock, None, deadline, None, lambda: "")
            except OSError as exc:
                raise AgentError(f"lost the connection to the guest agent: {exc}") from None
        except BaseException:
            sock.close()
            raise
        return cls(sock, None, reply)

    # -- sending -----------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self._closed is not None:
            raise self.explain(self._closed.error)
        with self._send_lock:
            try:
                self._sock.sendall(data)
            except OSError as exc:
                raise self.explain(
                    AgentError(f"lost the connection to the guest agent: {exc}")) from None

    def explain(self, error: AgentError) -> MicroboxError:
        """The error to report for a session that ended (once worked out, kept)."""
        if self.on_lost is None:
            return error
        with self._lost_lock:
            if self._lost is None:
                self._lost = self.on_lost(error)
            return self._lost

    def stream(self) -> Stream:
        """A new stream with a fresh id."""
        s = Stream(self, next(self._ids))
        with self._streams_lock:
            if self._closed is not None:
                raise self._closed.error
            self._streams[s.id] = s
        return s

    def _forget(self, stream_id: int) -> None:
        with self._streams_lock:
            self._streams.pop(stream_id, None)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(timeout=5)
        self._sock.close()
        if self._lock is not None:
            self._lock.close()

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def ended(self) -> bool:
        """closed, or about to be: the peer hung up and the reader thread has not
        seen it yet (an end-of-file is sticky, so a peek finds it at once)."""
        if self._closed is not None:
            return True
        try:
            return self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    # -- receiving ---------------------------------------------------------

    def _read_loop(self) -> None:
        error = AgentError("the connection to the guest agent closed")
        try:
            while True:
                data = self._sock.recv(_RECV)
                if not data:
                    break
                for frame in self._decoder.feed(data):
                    if frame.stream == 0:
                        if frame.type == T.ERROR:
                            error = AgentError(f"guest agent error: {error_message(frame)}")
                            return
                        continue  # stray PONGs etc. on stream 0
                    with self._streams_lock:
                        target = self._streams.get(frame.stream)
                    if target is not None:
                        target._q.put(frame)
        except ProtocolError as exc:
            error = AgentError(f"the guest agent sent a malformed frame ({exc})")
        except OSError as exc:
            error = AgentError(f"lost the connection to the guest agent: {exc}")
        finally:
            self._finish(error)

    def _finish(self, error: AgentError) -> None:
        closed = _Closed(error)
        with self._streams_lock:
            self._closed = closed
            streams = list(self._streams.values())
        for s in streams:
            try:
                s._q.put_nowait(closed)
            except queue.Full:
                # The consumer is far behind; it sees the end after draining.
                threading.Thread(target=s._q.put, args=(closed,), daemon=True).start()


def error_message(frame: Frame) -> str:
    """The message of an ERROR frame, made safe to print."""
    try:
        return untrusted_text(str(frame.json().get("message", "unknown error")))
    except ProtocolError:
        return "unreadable error frame"


RESYNC_HELLOS = 3  # HELLOs re-sent when the agent says it lost the framing
# A HELLO with no answer at all is sent again after this long: longer than the
# agent's frame gap (3 s), after which it has either answered or is hunting.
RESEND_AFTER = 4.0


def handshake(
    sock: socket.socket,
    identity: Identity | None,
    deadline: float,
    abort_fd: int | None,
    abort_reason: Callable[[], str],
) -> HelloReply:
    """Send HELLO and find the HELLO_REPLY with our session nonce.

    Bytes before the reply may be the tail of a previous client's session;
    they are skipped (docs/protocol.md, "Losing and regaining sync"). An
    ERROR of kind "protocol" means the agent lost the framing, perhaps inside
    a torn frame that swallowed our HELLO: it is hunting for one, so we send
    another, with a new nonce. That ERROR itself can be lost (the agent drops
    writes while the port still reports the previous client's hang-up), so a
    HELLO that gets no answer within RESEND_AFTER is sent again too.
    """
    resends = RESYNC_HELLOS
    session = _send_hello(sock, identity)
    resend_at = time.monotonic() + RESEND_AFTER
    scanner = ControlScanner()
    watch: list[int] = [sock.fileno()] if abort_fd is None else [sock.fileno(), abort_fd]
    while True:
        now = time.monotonic()
        if now >= deadline:
            raise AgentTimeout("the guest agent did not answer in time")
        if now >= resend_at:
            session = _send_hello(sock, identity)
            resend_at = now + RESEND_AFTER
        ready, _, _ = select.select(watch, [], [], min(deadline, resend_at) - now)
        if abort_fd is not None and abort_fd in ready:
            raise AgentError(abort_reason())
        if sock.fileno() not in ready:
            continue
        data = sock.recv(_RECV)
        if not data:
            raise AgentError("the guest agent closed the connection during the handshake")
        frames = scanner.feed(data)
        for n, frame in enumerate(frames, 1):
            body = frame.json()
            if frame.type == T.ERROR:
                if body.get("kind") == "protocol" and resends > 0:
                    resends -= 1
                    session = _send_hello(sock, identity)
                    continue
                raise AgentError(f"the guest agent refused the session: {error_message(frame)}")
            if body.get("session") != session:
                continue  # the reply to a HELLO we sent before re-sending
            if body.get("version") != VERSION:
                raise AgentError(
                    f"the guest agent speaks protocol {body.get('version')!r}, not {VERSION}"
                )
            if n < len(frames) or scanner.pending:
                raise AgentError("the guest agent sent data before the session began")
            return HelloReply.of(body)


def _send_hello(sock: socket.socket, identity: Identity | None) -> str:
    session = os.urandom(8).hex()
    hello: dict[str, Any] = {"version": VERSION, "session": session, "time_ns": time.time_ns()}
    if identity is not None:
        hello.update(hostname=identity.hostname, machine_id=identity.machine_id,
                     entropy=base64.b64encode(os.urandom(ENTROPY_BYTES)).decode())
        if identity.mounts:
            hello["mounts"] = list(identity.mounts)
    sock.sendall(encode(T.HELLO, 0, hello))
    return session
