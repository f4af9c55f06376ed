"""Starting and ending the QEMU process of a box.

The VMM runs in its own session and process group. An attached box (the owner
waits for it, as `run` without -d does) gets PR_SET_PDEATHSIG=SIGKILL so it dies
with its owner even when the owner is SIGKILLed. The box lock's file
description is inherited: the kernel drops the flock when QEMU dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import select
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

PR_SET_PDEATHSIG = 1
T = TypeVar("T")
# Loaded here, not in the forked child: dlopen there could wait for ever on a
# loader lock that another thread held at the moment of the fork.
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int) -> None:
    """Runs in the forked child before exec: async-signal-safe calls only."""
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(126)
    if os.getppid() != parent:  # the owner died before prctl took effect
        os._exit(126)


class _Spawner:
    """A thread that lives as long as the process and forks every attached VMM.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, so
    forking from a caller's short-lived thread (or an asyncio worker) would kill
    the VM early. Forking from this thread ties the VM to the process instead.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], T]) -> T:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="microbox-spawner")
                self._thread.start()
        fut: Future[object] = Future()
        self._jobs.put((fn, fut))
        return fut.result()  # type: ignore[return-value]

    def _loop(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)


_spawner = _Spawner()


def spawn(
    argv: Sequence[str], *, log: Path, pass_fds: Sequence[int], attached: bool
) -> subprocess.Popen[bytes]:
    """Start QEMU. Its stdout and stderr go to `log` (QEMU's own messages)."""
    if attached:
        return _spawner.call(lambda: _popen(argv, log, pass_fds, attached=True))
    return _popen(argv, log, pass_fds, attached=False)


def _popen(argv: Sequence[str], log: Path, pass_fds: Sequence[int], *, attached: bool
           ) -> subprocess.Popen[bytes]:
    parent = os.getpid()
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
            close_fds=True,
            preexec_fn=(lambda: _die_with_parent(parent)) if attached else None,
        )


def start_time(pid: int) -> float | None:
    """The process's start, the second half of its identity: seconds after the
    host booted (/proc/PID/stat's starttime), which no change of the wall clock
    moves. (A start in wall-clock time, as psutil works it out from btime, moved
    with every step of the clock, and a box's VMM then no longer looked like
    itself to stop, kill and delete.)"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        ticks = int(stat[stat.rindex(b")") + 2:].split()[19])  # field 22, starttime
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


# Identities recorded by microbox before start_time counted from boot are
# wall-clock times (seconds since the epoch): any value past this one is one.
WALL_CLOCK_FROM = 1e9


def _boot_time() -> float:
    """The host's boot time (seconds since epoch), from /proc/stat's btime."""
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime"):
                return float(line.split()[1])
    raise OSError("/proc/stat has no btime line")


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` for every thread of `pid` to exit, without polling.

    A zombie is dead (on some hosts PID 1 reaps orphans late), but a zombie
    group leader whose other threads are still exiting may still hold files,
    such as the box lock: the pidfd becomes readable only after the last one.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
        return bool(ready)
    finally:
        os.close(fd)


def exited(pid: int) -> bool:
    return wait_exit(pid, 0)


def same_process(pid: int, started: float | None) -> bool:
    """True if `pid` is alive and is the process that started at `started`."""
    if started is None:
        return False
    now = start_time(pid)
    if now is not None and started >= WALL_CLOCK_FROM:
        now += _boot_time()  # recorded before the upgrade, as psutil did
    return now is not None and abs(now - started) < 0.01 and not exited(pid)


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by `pid` (the VMM); gone already is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
