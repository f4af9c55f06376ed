"""A process's identity (pid + start) survives steps of the wall clock; one
that exited, or another pid, is never taken for it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from microbox.vmm import process


def test_a_step_of_the_clock_leaves_identities_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    me = os.getpid()
    started = process.start_time(me)
    assert started is not None and started < process.WALL_CLOCK_FROM
    assert process.same_process(me, started)
    booted = process._boot_time()
    # settimeofday() moves /proc/stat's btime with the wall clock
    monkeypatch.setattr(process, "_boot_time", lambda: booted + 3600)
    assert process.same_process(me, started)


def test_identities_recorded_in_wall_clock_time_still_match() -> None:
    me = os.getpid()
    started = process.start_time(me)
    assert started is not None
    assert process.same_process(me, started + process._boot_time())  # recorded before


def test_another_or_an_exited_process_is_not_the_same() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process.start_time(child.pid)
    child.wait()
    assert started is not None
    assert not process.same_process(child.pid, started)
    mine = process.start_time(os.getpid())
    assert mine is not None and not process.same_process(os.getpid(), mine - 1)
