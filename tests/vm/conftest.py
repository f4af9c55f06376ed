"""Every VM test runs under a leak guard: no QEMU process, box shim, box dir or
--net tap piece (namespace, link, nftables chain) may outlive it."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import microbox
from microbox.store import boxes
from tests.conftest import net_pieces, qemu_pids, shim_pids, still_running


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)


def _check(home: Path, before: set[int], nets: set[str]) -> list[str]:
    problems = []
    leaked = still_running(qemu_pids(home) - before, 5.0)
    for pid in leaked:
        os.kill(pid, 9)
    if leaked:
        problems.append(f"QEMU processes outlived the test: {sorted(leaked)}")
    shims = still_running(shim_pids(home) - before, 5.0)
    for pid in shims:
        os.kill(pid, 9)
    if shims:
        problems.append(f"box shims outlived the test: {sorted(shims)}")
    boxes = home / "boxes"
    dirs = sorted(p.name for p in boxes.iterdir()) if boxes.exists() else []
    for d in dirs:
        shutil.rmtree(boxes / d, ignore_errors=True)
    if dirs:
        problems.append(f"box dirs outlived the test: {dirs}")
    left = sorted(net_pieces() - nets)
    if left:
        problems.append(f"box networks outlived the test: {left}")
    return problems


@pytest.fixture(autouse=True)
def leak_guard(microbox_home: Path) -> Iterator[None]:
    before = qemu_pids(microbox_home) | shim_pids(microbox_home)
    nets = net_pieces()
    yield
    problems = _check(microbox_home, before, nets)
    assert not problems, "; ".join(problems)


@pytest.fixture
def rt() -> Iterator[microbox.Runtime]:
    """A runtime whose pools are all removed at the end, spares and fillers
    included, and whose half-made boxes (a killed filler's) gc removes."""
    with microbox.Runtime() as runtime:
        try:
            yield runtime
        finally:
            for p in runtime.pools.list():
                runtime.pools.remove(p.id)
            runtime.host.gc()
            assert not boxes.spares(runtime.db)


@pytest.fixture
def fresh_home(microbox_home: Path) -> Iterator[Path]:
    """A MICROBOX_HOME of its own (under the same leak guard), for tests that
    damage the database."""
    home = Path(tempfile.mkdtemp(prefix="mbf-", dir="/tmp"))
    os.environ["MICROBOX_HOME"] = str(home)
    nets = net_pieces()
    try:
        yield home
        problems = _check(home, set(), nets)
    finally:
        os.environ["MICROBOX_HOME"] = str(microbox_home)
        shutil.rmtree(home, ignore_errors=True)
    assert not problems, "; ".join(problems)


def wait_for(predicate: object, timeout: float = 60.0, what: str = "condition") -> None:
    """Wait for an asynchronous fact (a VMM appearing) with a bound, never a fixed sleep."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
