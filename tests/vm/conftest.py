"""Every VM test runs under a leak guard: no QEMU process and no box dir may
outlive it."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import qemu_pids


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)


def _reaped(pids: set[int], timeout: float = 5.0) -> set[int]:
    """QEMU processes among `pids` still alive after `timeout` (they may be exiting)."""
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        _gone, still = psutil.wait_procs([psutil.Process(p) for p in alive if psutil.pid_exists(p)],
                                        timeout=max(0.0, deadline - time.monotonic()))
        alive = {p.pid for p in still}
    return alive


@pytest.fixture(autouse=True)
def leak_guard(microbox_home: Path) -> Iterator[None]:
    before = qemu_pids(microbox_home)
    yield
    leaked = _reaped(qemu_pids(microbox_home) - before)
    boxes = microbox_home / "boxes"
    dirs = sorted(p.name for p in boxes.iterdir()) if boxes.exists() else []
    for pid in leaked:
        os.kill(pid, 9)
    for d in dirs:
        shutil.rmtree(boxes / d, ignore_errors=True)
    assert not leaked, f"QEMU processes outlived the test: {sorted(leaked)}"
    assert not dirs, f"box dirs outlived the test: {dirs}"
