"""A TCP connection to a port inside a box, carried over the agent channel
(CONNECT, docs/protocol.md): no network device is needed in the box."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from microbox.agent.channel import Stream, error_message
from microbox.agent.protocol import CHUNK, T
from microbox.errors import AgentError


class Connection:
    """Bytes to and from a guest TCP port. `receive()` yields what the guest
    side sends until it closes its end; `close_write()` closes ours."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._write_closed = False
        self._done = False

    def send(self, data: bytes) -> None:
        for i in range(0, len(data), CHUNK):
            self._stream.send(T.DATA, data[i:i + CHUNK])

    def close_write(self) -> None:
        if not self._write_closed:
            self._write_closed = True
            with contextlib.suppress(AgentError):
                self._stream.send(T.DATA, b"")

    def receive(self) -> Iterator[bytes]:
        """The guest side's bytes until it closes its end (or the connection ends)."""
        while not self._done:
            frame = self._stream.recv()
            if frame.type == T.DATA and frame.payload:
                yield frame.payload
                continue
            if frame.type in (T.DONE, T.ERROR):
                self._done = True
                self._stream.close()
                if frame.type == T.ERROR:
                    raise AgentError(f"the connection in the box failed: {error_message(frame)}")
            return  # an empty DATA: the guest closed its end

    def close(self) -> None:
        """End the connection at once (both directions)."""
        if not self._done:
            self._done = True
            with contextlib.suppress(AgentError):
                self._stream.send(T.CANCEL, {})
            self._stream.close()
