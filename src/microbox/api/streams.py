"""Blocking SDK iterators (exec output, logs, file chunks) as async iterators.

Each `next()` runs on a worker thread. A consumer that goes away (the client
disconnected) must not leave work behind: `on_abandon` ends the source (kills the
process, stops a log follow), then the iterator is closed on a thread of its own
once the `next()` in flight returns, which releases what it holds (its agent stream).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Generic, TypeVar

import anyio.to_thread

T = TypeVar("T")
_END = object()


class _Pull(Generic[T]):
    """One iterator, advanced and closed under one lock (never both at once)."""

    def __init__(self, it: Iterator[T]) -> None:
        self._it = it
        self._lock = threading.Lock()

    def next(self) -> T | object:
        with self._lock:
            return next(self._it, _END)

    def close(self, on_abandon: Callable[[], object]) -> None:
        on_abandon()
        with self._lock:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()


async def pull(it: Iterator[T], on_abandon: Callable[[], object] = lambda: None
               ) -> AsyncGenerator[T, None]:
    source = _Pull(it)
    finished = False
    try:
        while True:
            item = await anyio.to_thread.run_sync(source.next, abandon_on_cancel=True)
            if item is _END:
                finished = True
                return
            yield item  # type: ignore[misc]  # anything but _END is a T
    finally:
        if not finished:
            threading.Thread(target=source.close, args=(on_abandon,), daemon=True,
                             name="microbox-api-abandon").start()


def encode(data: bytes, encoding: str) -> tuple[str, str]:
    """(text, "utf-8") where it decodes and `encoding` allows, else (base64, "base64")."""
    if encoding == "auto":
        try:
            return data.decode(), "utf-8"
        except UnicodeDecodeError:
            pass
    return base64.b64encode(data).decode(), "base64"
