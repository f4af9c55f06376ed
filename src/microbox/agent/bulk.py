"""Tree copies and TCP connections over a Channel: TAR_GET, TAR_PUT and CONNECT
(docs/protocol.md), each sent only to an agent that lists its capability."""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterable

from microbox.agent.channel import Channel, Stream
from microbox.agent.ops import DEFAULT_TIMEOUT, _check, _error, _expect, _wire
from microbox.agent.protocol import CHUNK, Capability, T
from microbox.errors import AgentError, ConnectFailed, UsageError

CONNECT_TIMEOUT = 15.0  # the agent itself gives up dialing after 10 s


def _require(channel: Channel, capability: Capability, what: str) -> None:
    if not channel.hello.supports(capability):
        raise AgentError(f"the box's agent does not support {what}; "
                         "restart the box to get the new agent")


def _cancel(channel: Channel, stream: Stream) -> None:
    """Stop what the agent still does on `stream`, if it can be told to."""
    if channel.hello.supports(Capability.CANCEL) and not channel.closed:
        with contextlib.suppress(AgentError):
            stream.send(T.CANCEL, {})


def tar_get(channel: Channel, path: str, timeout: float = DEFAULT_TIMEOUT, *,
            export: bool = False) -> Generator[bytes, None, None]:
    """The tar stream (pax) of `path` in the guest, in pieces as they arrive.

    Entries are named from the path's base name, as `tar -C dirname basename`
    names them; the walk stays on the path's file system. With `export`, an
    agent that lists `tar_export` stores hard links as links and extended
    attributes as SCHILY.xattr records (an older one: copies, no xattrs).
    GuestNotFound if the path does not exist, AgentError for any other failure;
    after a failure the bytes already yielded are not a whole tar and must be
    discarded. Closing the iterator early stops the agent.
    """
    _require(channel, Capability.TAR, "copying directory trees")
    request: dict[str, object] = {"path": _wire(path)}
    if export and channel.hello.supports(Capability.TAR_EXPORT):
        request.update(hardlinks=True, xattrs=True)
    return _tar_chunks(channel, path, request, timeout)


def _tar_chunks(channel: Channel, path: str, request: dict[str, object],
                timeout: float) -> Generator[bytes, None, None]:
    stream = channel.stream()
    doing = f"reading the tree {path}"
    finished = False
    try:
        stream.send(T.TAR_GET, request)
        while True:
            frame = stream.recv(timeout)
            finished = frame.type == T.ERROR  # the agent ended the stream
            if not (data := _check(frame, T.DATA, doing).payload):
                break
            yield data
        _expect(stream, T.DONE, doing, timeout)
        finished = True
    finally:
        if not finished:
            _cancel(channel, stream)
        stream.close()


def tar_put(channel: Channel, path: str, chunks: Iterable[bytes],
            timeout: float = DEFAULT_TIMEOUT) -> None:
    """Extract the tar stream made of `chunks` into the guest directory `path`.

    The directory must exist (GuestNotFound otherwise). The agent refuses
    absolute names, `..` and anything that would be written through a
    symbolic link; what was extracted before a failure stays.
    """
    _require(channel, Capability.TAR, "copying directory trees")
    stream = channel.stream()
    doing = f"writing a tree into {path}"
    finished = False
    try:
        stream.send(T.TAR_PUT, {"path": _wire(path)})
        for chunk in chunks:
            if (early := stream.poll()) is not None:  # an ERROR: stop sending
                finished = early.type == T.ERROR
                _check(early, T.DONE, doing)
                raise AgentError(f"{doing}: the guest agent finished before the end of the tar")
            for i in range(0, len(chunk), CHUNK):
                stream.send(T.DATA, chunk[i:i + CHUNK])
        stream.send(T.DATA, b"")
        frame = stream.recv(timeout)
        finished = frame.type in (T.ERROR, T.DONE)
        _check(frame, T.DONE, doing)
    finally:
        if not finished:
            _cancel(channel, stream)
        stream.close()


def connect(channel: Channel, port: int, host: str = "127.0.0.1",
            timeout: float = CONNECT_TIMEOUT) -> Stream:
    """Open a TCP connection from inside the guest to `host` (an IP address) and `port`.

    Returns the stream once the agent answered CONNECTED. DATA frames carry the
    bytes both ways: send an empty DATA to end the host's side; the guest's
    side ends with an empty DATA, and the stream with DONE (or ERROR) once
    both have ended. Sending CANCEL closes the connection at once. The caller
    closes the stream. ConnectFailed when nothing accepts the connection.
    """
    _require(channel, Capability.CONNECT, "connecting to ports in the box")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise UsageError(f"port {port!r} is not a number in 1..65535")
    stream = channel.stream()
    try:
        stream.send(T.CONNECT, {"port": port, "host": host})
        frame = stream.recv(timeout)
        if frame.type == T.ERROR:
            kind, message = _error(frame)
            if kind == "refused":
                raise ConnectFailed(f"cannot connect to {host}:{port} in the box: {message}")
            raise AgentError(f"connecting to {host}:{port} failed in the box ({kind}): {message}")
        if frame.type != T.CONNECTED:
            raise AgentError(f"the guest agent answered CONNECT with {frame.type.name}")
        return stream
    except BaseException:
        stream.close()
        raise
