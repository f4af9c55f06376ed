"""A command killed at the worst moment (failpoints.py places the kill) leaves
every box running and truthful, pools filled, ports served and errors that
name a way out (issue: faults). bench/faults.py kills at random moments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import microbox
from microbox import locks, paths
from microbox.core import shim
from microbox.core.boxdir import for_box
from microbox.core.reconcile import starter_alive
from microbox.failpoints import ENV
from microbox.store import boxes
from tests.conftest import qemu_pids, still_running
from tests.vm.conftest import wait_for
from tests.vm.helpers import CLI, ECHO, echo_through, free_port, listening, mb, spawn


def _with_failpoint(point: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *args], capture_output=True, timeout=120,
                          env=dict(os.environ, **{ENV: point}))


def _killed_at(point: str, *args: str) -> None:
    r = _with_failpoint(point, *args)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)


@pytest.fixture
def src() -> Iterator[microbox.Box]:
    with microbox.Runtime() as rt, rt.boxes.run("busybox", name="src") as box:
        yield box
        for snap in rt.snapshots.list():
            rt.snapshots.remove(snap.id, force=True)


@pytest.mark.parametrize("point", ["migration-started", "snapshot-saved"])
def test_a_snapshot_killed_while_the_box_is_stopped_leaves_it_running(
        src: microbox.Box, point: str) -> None:
    """Killed mid-migration or after it (vCPUs stopped, QEMU in postmigrate),
    `snapshot create` left the box frozen while ls said running: exec hung,
    resume refused, the next snapshot failed."""
    _killed_at(point, "snapshot", "create", "src", "s1")
    assert for_box(src.id).frozen.exists()
    r = mb("exec", "src", "--", "echo", "thawed", timeout=30)
    assert (r.returncode, r.stdout) == (0, b"thawed\n"), r.stderr
    assert not for_box(src.id).frozen.exists()
    assert src.reload().status == "running"
    r = mb("snapshot", "create", "src", "s2", timeout=60)
    assert r.returncode == 0, r.stderr
    assert mb("gc").returncode == 0  # the killed snapshot's half-made dir goes
    with microbox.Runtime() as rt:
        assert [s.name for s in rt.snapshots.list()] == ["s2"]


def test_a_vmm_killed_during_a_snapshot_is_named_with_its_recovery(
        src: microbox.Box, home: Path) -> None:
    """QEMU killed while its state was saved: the error was "QMP cont failed:
    [Errno 32] Broken pipe", which names no way out."""
    p = subprocess.Popen([*CLI, "snapshot", "create", "src", "s1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE,
                         env=dict(os.environ, **{ENV: "snapshot-saved:stop"}))
    try:
        wait_for(lambda: _stopped(p.pid), 60, "the snapshot to stop at its failpoint")
        assert src.record.pid is not None
        os.kill(src.record.pid, signal.SIGKILL)
        assert not still_running({src.record.pid}, 10)
    finally:
        os.kill(p.pid, signal.SIGCONT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1
    assert b"stopped running while it was being saved" in err
    assert b"microbox delete src" in err
    assert not list((home / "snapshots").glob(".tmp-*"))


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def test_an_interrupted_fork_leaves_no_clone(src: microbox.Box, home: Path) -> None:
    """Killed after its clones started but before they were its result, fork
    left them running with nothing printed; now they are made all or none."""
    before = qemu_pids(home)
    _killed_at("fork-started", "fork", "src", "-n", "3")
    listed = json.loads(mb("ls", "-a", "--json").stdout)["data"]
    assert [b["name"] for b in listed] == ["src"]
    assert not still_running(qemu_pids(home) - before, 10)
    assert mb("exec", "src", "--", "true").returncode == 0


def test_a_killed_shim_is_restarted_by_the_next_command_ports_included() -> None:
    """The published ports are the shim's listeners: after a shim was killed they
    refused connections until some later exec, and `port` did not help."""
    port = free_port()
    r = mb("run", "-d", "--name", "served", "-p", f"{port}:7000", "busybox", "--", *ECHO)
    assert r.returncode == 0, r.stderr
    try:
        assert mb("exec", "served", "--", *listening(7000)).returncode == 0
        with microbox.Runtime() as rt:
            d = for_box(rt.boxes.get("served").id)
        old = shim.pid(d)
        assert old is not None
        os.kill(old, signal.SIGKILL)
        assert not still_running({old}, 10)
        r = mb("port", "served")
        assert r.returncode == 0 and f"7000/tcp -> 127.0.0.1:{port}".encode() in r.stdout
        assert shim.pid(d) not in (None, old)
        assert echo_through(port, b"again\n") == b"again\n"
    finally:
        mb("delete", "-f", "served")


def test_a_lost_connection_to_a_running_box_names_a_recovery(src: microbox.Box) -> None:
    p = spawn("exec", "src", "--", "sleep", "60")
    try:
        d = for_box(src.id)
        wait_for(lambda: b"sleep 60" in src.run(["ps"]).stdout, 30, "the exec to start")
        old = shim.pid(d)
        assert old is not None
        os.kill(old, signal.SIGKILL)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 1
    assert b"still running" in err and b"microbox exec src -- true" in err, err


def test_a_pooled_rm_box_goes_when_both_its_run_and_its_shim_die(
        rt: microbox.Runtime, home: Path) -> None:
    """The shim kills a taken pool box's VMM when the run dies; with the shim
    killed first, nothing did (10 of 10), though ls and gc ran."""
    rt.pools.add("busybox", size=1)
    (spare,) = boxes.spares(rt.db)
    p = spawn("run", "--rm", "--name", "taken", "busybox", "--", "sleep", "60")
    wait_for(lambda: (boxes.get(rt.db, spare.id) or spare).status == "running", 30,
             "the run to take the spare")
    p.send_signal(signal.SIGSTOP)
    shim_pid = shim.pid(for_box(spare.id))
    assert shim_pid is not None and spare.pid is not None
    os.kill(shim_pid, signal.SIGKILL)
    assert not still_running({shim_pid}, 10)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert mb("ls", "-a").returncode == 0
    assert not still_running({spare.pid}, 10), "the --rm box outlived its run and shim"
    assert boxes.get(rt.db, spare.id) is None
    assert not (home / "boxes" / spare.id).exists()


def test_a_pool_whose_filler_died_is_filled_by_the_next_run(rt: microbox.Runtime) -> None:
    """A run started a filler only when it took a box: a filler killed while it
    made one left the pool short for good (9 of 11)."""
    pool = rt.pools.add("busybox", size=1)
    # The run takes the pool's box; the filler it starts inherits the failpoint
    # and dies with a spare booted but not yet made ready.
    r = _with_failpoint("spare-booted", "run", "--rm", "busybox", "--", "true")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: _died_making_a_box(rt, pool.id), 60, "the filler to die at its failpoint")
    assert rt.pools.get(pool.id).ready == 0
    assert mb("run", "--rm", "busybox", "--", "true").returncode == 0
    wait_for(lambda: rt.pools.get(pool.id).ready == 1, 60, "the pool to be filled again")


def _died_making_a_box(rt: microbox.Runtime, pool_id: str) -> bool:
    """The filler died with a box half made (its row `starting`, its starter
    gone) and let go of the pool's lock: only now is no filler at work."""
    half = [r for r in boxes.all_boxes(rt.db) if r.pool == pool_id and r.status == "starting"]
    return bool(half) and not any(starter_alive(r) for r in half) and \
        not locks.is_held(paths.pools_dir() / f"{pool_id}.lock")
