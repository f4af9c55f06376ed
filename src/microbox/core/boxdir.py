"""The run directory of one box: its sockets, console log, disk overlay and lock.

    <home>/boxes/<id>/
        lock            flock held by the QEMU process for its whole life
        qmp.sock        QMP (QEMU listens; mode 0600)
        port<N>.sock    virtio-serial port N (agent protocol; mode 0600)
        port<N>.lock    flock taken by the host client using port N
        console.log     guest serial console
        qemu.log        QEMU's own stderr
        disk.qcow2      copy-on-write overlay over the image
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from microbox import paths
from microbox.errors import UsageError

# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_SUN_PATH_MAX = 107


@dataclass(frozen=True)
class BoxDir:
    path: Path

    @property
    def lock(self) -> Path:
        return self.path / "lock"

    @property
    def qmp(self) -> Path:
        return self.path / "qmp.sock"

    @property
    def qmp_lock(self) -> Path:
        return self.path / "qmp.lock"

    def port(self, n: int) -> Path:
        return self.path / f"port{n}.sock"

    def port_lock(self, n: int) -> Path:
        return self.path / f"port{n}.lock"

    @property
    def console_log(self) -> Path:
        return self.path / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.path / "qemu.log"

    @property
    def disk(self) -> Path:
        return self.path / "disk.qcow2"

    def create(self) -> int:
        """Make the dir with its lock held; returns the lock fd.

        Both steps happen under a shared hold of the boxes lock, which
        `gc` takes exclusively: gc never sees a dir that is made but not yet locked.
        """
        longest = str(self.port(99))
        if len(longest.encode()) > _SUN_PATH_MAX:
            raise UsageError(
                f"box directory path {self.path} is too long for Unix sockets",
                "export MICROBOX_HOME=<a shorter path>",
            )
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with creating(fcntl.LOCK_SH):
            self.path.mkdir(mode=0o700)
            try:
                return self.take_lock()
            except BaseException:
                self.remove()
                raise

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def remove_runtime_files(self) -> None:
        """Sockets and client locks of a dead VMM; the disk and logs stay."""
        for pattern in ("*.sock", "port*.lock", "qmp.lock"):
            for f in self.path.glob(pattern):
                f.unlink(missing_ok=True)

    def exists(self) -> bool:
        return self.path.is_dir()

    def take_lock(self) -> int:
        """Open and exclusively lock the box lock; returns the fd (to pass to QEMU)."""
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise
        return fd

    def alive(self) -> bool:
        """True while some process (the VMM, or a command creating the box) holds the lock."""
        try:
            fd = os.open(self.lock, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def listen(self, path: Path) -> socket.socket:
        """Bind a Unix socket at `path` with mode 0600 and start listening."""
        path.unlink(missing_ok=True)  # left by a VMM that was killed; we hold the box lock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))  # the box dir is 0700, so the moment before chmod is private
        os.chmod(path, 0o600)
        sock.listen(4)
        return sock


@contextlib.contextmanager
def creating(how: int) -> Iterator[None]:
    """Hold the boxes lock: LOCK_SH while making a box dir, LOCK_EX while sweeping them."""
    fd = os.open(paths.boxes_lock(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, how)
        yield
    finally:
        os.close(fd)


def for_box(box_id: str) -> BoxDir:
    return BoxDir(paths.boxes_dir() / box_id)
