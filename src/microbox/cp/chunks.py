"""Byte chunks as blocking file objects and back, holding one chunk at a time."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import IO, cast

CHUNK = 64 * 1024  # the agent protocol's largest data chunk (docs/protocol.md)


class ChunkReader(io.RawIOBase):
    """A readable binary file over an iterator of byte chunks (the agent's tar
    stream), for tarfile's stream mode. Closing it closes the iterator, which
    ends the agent stream behind it."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._it: Iterator[bytes] = iter(chunks)
        self._chunk = memoryview(b"")
        self.count = 0  # bytes handed out

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._chunk:
            try:
                self._chunk = memoryview(next(self._it))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._chunk))
        buffer[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        self.count += n
        return n

    def close(self) -> None:
        if not self.closed:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()
        super().close()


def read_chunks(f: IO[bytes], size: int = CHUNK) -> Iterator[bytes]:
    """The contents of a binary file object, `size` bytes at a time."""
    while chunk := f.read(size):
        yield chunk


def as_chunks(source: IO[bytes] | Iterable[bytes]) -> Iterable[bytes]:
    """Byte chunks from a binary file object, or the chunks given."""
    if hasattr(source, "read"):
        return read_chunks(cast(IO[bytes], source))
    return source


def coalesce(pieces: Iterable[bytes], size: int = CHUNK) -> Iterator[bytes]:
    """The same bytes in chunks of exactly `size` (the last one shorter): tar
    headers are 512 bytes, and a frame each would be wasteful."""
    buf = bytearray()
    for piece in pieces:
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)
