"""Starting the QEMU process of a box.

The VMM runs in its own session and process group. An attached box (the owner
waits for it, as `run` without -d does) gets PR_SET_PDEATHSIG=SIGKILL so it dies
with its owner even when the owner is SIGKILLed. The box lock's file
description is inherited: the kernel drops the flock when QEMU dies.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

PR_SET_PDEATHSIG = 1
PR_SET_THP_DISABLE = 41
T = TypeVar("T")
# Loaded here, not in the forked child: dlopen there could wait for ever on a
# loader lock that another thread held at the moment of the fork.
_libc = ctypes.CDLL(None, use_errno=True)


def _without_huge_pages() -> None:
    """Runs in the forked child before exec (async-signal-safe): no transparent
    huge pages for the VMM, a setting execve keeps. QEMU asks for huge pages
    on TCG's 1 GiB code buffer, so where THP is `madvise` or `always` a box
    held its translated code 2 MiB at a time: 1.9 MiB more Pss per idle clone
    here, at the same speed (docs/snapshots.md). Where THP is off this changes
    nothing; a kernel that refuses it leaves the VMM as it was."""
    _libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)


def _die_with_parent(parent: int) -> None:
    """Runs in the forked child before exec: async-signal-safe calls only."""
    _without_huge_pages()
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
    argv: Sequence[str], *, log: Path, pass_fds: Sequence[int], attached: bool,
    libs: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start QEMU. Its stdout and stderr go to `log` (QEMU's own messages). A
    `libs` directory goes first on its library path (artifacts/vmm_libs.py)."""
    env = environ(libs)
    if attached:
        return _spawner.call(lambda: _popen(argv, log, pass_fds, env, attached=True))
    return _popen(argv, log, pass_fds, env, attached=False)


def environ(libs: Path | None) -> dict[str, str]:
    """This process's environment, with `libs` first on LD_LIBRARY_PATH."""
    env = dict(os.environ)
    if libs is not None:
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(libs),
                                                        env.get("LD_LIBRARY_PATH")]))
    return env


def _popen(argv: Sequence[str], log: Path, pass_fds: Sequence[int], env: dict[str, str], *,
           attached: bool) -> subprocess.Popen[bytes]:
    parent = os.getpid()
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
            close_fds=True,
            preexec_fn=(lambda: _die_with_parent(parent)) if attached else _without_huge_pages,
        )
