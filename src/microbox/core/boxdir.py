"""The run directory of one box: its sockets, console log, disk overlay and lock.

    <home>/boxes/<id>/
        lock            flock held by the QEMU process for its whole life
        qmp.sock        QMP (QEMU listens; mode 0600)
        qmp.lock        flock held by the one QMP client at a time
        owner.lock      flock held by the attached `run` that took this pool box
        frozen          while a snapshot has the vCPUs stopped (core/freeze.py)
        port<N>.sock    virtio-serial port N (agent protocol; mode 0600)
        port<N>.lock    flock held by the client of port N (the shim)
        mux.sock        the shim: any number of agent clients (mode 0600)
        shim.lock       flock held by the shim for its whole life; holds its pid
        shim.log        the shim's own stderr
        proxy.sock      the shim's egress proxy (--net user; mode 0600)
        net-policy.json the effective egress policy the shim enforces
        net.log         one line per connection the proxy refused (net.log.1: older)
        net-stats.json  the proxy's traffic counters, rewritten by the shim (core/stats.py)
        console.log     guest serial console
        qemu.log        QEMU's own stderr
        disk.qcow2      copy-on-write overlay over the image
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from microbox import locks, paths
from microbox.errors import UsageError

if TYPE_CHECKING:
    from microbox.store.boxes import BoxRecord

PORTS = 4  # the box's virtio-serial agent ports, port0.sock .. port3.sock

# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_SUN_PATH_MAX = 107


@dataclass(frozen=True)
class BoxDir:
    path: Path

    @property
    def lock(self) -> Path:
        return self.path / paths.BOX_LOCK

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
    def owner(self) -> Path:
        """flock held by the attached command that took a pool's box (core/reconcile.py)."""
        return self.path / "owner.lock"

    @property
    def frozen(self) -> Path:
        """Present while a command has the vCPUs stopped to save the box (core/freeze.py)."""
        return self.path / "frozen"

    @property
    def mux(self) -> Path:
        return self.path / "mux.sock"

    @property
    def shim_lock(self) -> Path:
        return self.path / "shim.lock"

    @property
    def shim_log(self) -> Path:
        return self.path / "shim.log"

    @property
    def proxy_sock(self) -> Path:
        return self.path / "proxy.sock"

    @property
    def net_policy(self) -> Path:
        return self.path / "net-policy.json"

    @property
    def net_log(self) -> Path:
        return self.path / "net.log"

    @property
    def net_stats(self) -> Path:
        return self.path / "net-stats.json"

    @property
    def console_log(self) -> Path:
        return self.path / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.path / "qemu.log"

    @property
    def disk(self) -> Path:
        return self.path / "disk.qcow2"

    def create(self) -> locks.Lock:
        """Make the dir with its lock held; returns the lock.

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
        with creating(shared=True):
            self.path.mkdir(mode=0o700)
            try:
                lock = self.take_lock()
            except BaseException:
                self.remove()
                raise
            assert lock is not None  # the dir is new: nobody else can hold its lock
            return lock

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def remove_runtime_files(self) -> None:
        """Sockets and client locks of a dead VMM; the disk and logs stay."""
        for pattern in ("*.sock", "port*.lock", "qmp.lock"):
            for f in self.path.glob(pattern):
                f.unlink(missing_ok=True)

    def exists(self) -> bool:
        return self.path.is_dir()

    def take_lock(self) -> locks.Lock | None:
        """The box lock (to pass to QEMU), or None while another process holds it."""
        return locks.try_acquire(self.lock)

    def alive(self) -> bool:
        """True while some process (the VMM, or a command creating the box) holds the lock."""
        return locks.is_held(self.lock)

    def listen(self, path: Path) -> socket.socket:
        """Bind a Unix socket at `path` with mode 0600 and start listening."""
        path.unlink(missing_ok=True)  # left by a VMM that was killed; we hold the box lock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))  # the box dir is 0700, so the moment before chmod is private
        os.chmod(path, 0o600)
        sock.listen(4)
        return sock


def creating(*, shared: bool) -> contextlib.AbstractContextManager[locks.Lock]:
    """Hold the boxes lock: shared while making a box dir, exclusive while sweeping them."""
    return locks.held(paths.boxes_lock(), shared=shared)


def for_box(box_id: str) -> BoxDir:
    return BoxDir(paths.boxes_dir() / box_id)


def box_dir(record: BoxRecord) -> BoxDir:
    return for_box(record.id)
