"""A process's identity and end: who a recorded pid is, waiting for it to exit,
killing its group. (Starting the VMM is microbox.vmm.spawn.)"""

from __future__ import annotations

import contextlib
import os
import select
import signal


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
