"""File locks (flock), the one way microbox serialises work across processes.

A lock is a file opened 0600 and flocked; the kernel drops the lock when the
last descriptor of that open file closes, including when its holder dies. A
`Lock` owns its descriptor: close it (or leave its `with`) to release, or hand
it to a child process with `fileno()` and `close()` in the parent.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType


class Lock:
    """A held flock on `path`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError(f"the lock on {self.path} was released")
        return self._fd

    def detach(self) -> int:
        """Give up ownership of the descriptor (it now belongs to the caller)."""
        fd = self.fileno()
        self._fd = None
        return fd

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _open(path: Path, create: bool) -> int:
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    return os.open(path, flags, 0o600)


def acquire(path: Path, *, shared: bool = False) -> Lock:
    """Wait for the lock (exclusive, or shared with other shared holders)."""
    fd = _open(path, create=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return Lock(path, fd)


def try_acquire(path: Path) -> Lock | None:
    """The exclusive lock if nobody holds it now; None otherwise."""
    fd = _open(path, create=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return Lock(path, fd)


def create_held(path: Path) -> Lock:
    """A new lock file at `path` that is held from the moment it appears there:
    made and flocked under a temporary name, then renamed into place, so that
    no other process can find it unheld and take its holder for dead."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = _open(tmp, create=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, path)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return Lock(path, fd)


def is_held(path: Path) -> bool:
    """True while some process holds a lock on `path` (a missing file is not held)."""
    try:
        fd = _open(path, create=False)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextmanager
def held(path: Path, *, shared: bool = False) -> Iterator[Lock]:
    """`acquire` for the length of a `with` block."""
    with acquire(path, shared=shared) as lock:
        yield lock
