"""Pools: `run` takes a box kept ready, which is then its own machine and its
own box in every way, the pool fills again behind it, and nothing of a pool
outlives its removal or a killed owner."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import microbox
from microbox.store import boxes
from microbox.store.boxes import BoxRecord
from tests.conftest import still_running
from tests.vm.conftest import wait_for
from tests.vm.helpers import ECHO, echo_through, free_port, listening, mb, spawn

PROBE = ("head -c 16 /dev/urandom | od -An -tx1; hostname; cat /etc/machine-id; date +%s")


def _spares(rt: microbox.Runtime) -> list[BoxRecord]:
    return [s for s in boxes.spares(rt.db) if s.pid is not None]


def _full(rt: microbox.Runtime, size: int) -> bool:
    return all(p.ready == size for p in rt.pools.list())


def test_run_takes_a_ready_box_and_the_pool_fills_again(rt: microbox.Runtime) -> None:
    p = rt.pools.add("busybox", size=1)
    assert (p.size, p.ready, p.spec.image) == (1, 1, "busybox")
    assert [q.id for q in rt.pools.list()] == [p.id] and rt.pools.get("busybox").id == p.id
    (spare,) = _spares(rt)
    assert rt.boxes.list(all=True) == []  # a pool's boxes are not the user's

    r = mb("run", "--rm", "--name", "taken", "-e", "GREETING=hi", "busybox", "--",
           "sh", "-c", f"{PROBE}; echo $GREETING; exit 7")
    assert r.returncode == 7, r.stderr
    rnd, host, mid, clock, greeting = r.stdout.decode().splitlines()
    assert (host, mid, greeting) == ("taken", spare.id, "hi")  # the spare, as this box
    assert abs(int(clock) - time.time()) < 5

    wait_for(lambda: _full(rt, 1), 60, "the pool to fill again")
    (again,) = _spares(rt)
    assert again.id != spare.id
    assert mb("ls", "-a", "--json").stdout.count(b'"id"') == 0  # the taken box is gone

    # a detached run keeps the box it took after the command that took it exits,
    # and the ports it publishes are bound when it takes the box
    port = free_port()
    r = mb("run", "-d", "--name", "kept", "-p", f"{port}:7000", "busybox", "--", *ECHO)
    assert r.returncode == 0, r.stderr
    box = rt.boxes.get("kept")
    assert (box.id, box.status) == (again.id, "running")
    assert mb("exec", "kept", "--", *listening(7000)).returncode == 0
    assert echo_through(port, b"through the pool's box\n") == b"through the pool's box\n"
    other = box.run(["sh", "-c", PROBE]).stdout.decode().splitlines()
    assert other[0] != rnd and other[1:3] == ["kept", again.id]
    box.delete(force=True)


def test_a_killed_run_takes_the_pooled_box_with_it(rt: microbox.Runtime, home: Path) -> None:
    """The VMM was started by the pool's filler, so no PR_SET_PDEATHSIG ties it
    to the run that took it: the box's shim kills it when that run is gone."""
    rt.pools.add("busybox", size=1)
    (spare,) = _spares(rt)
    p = spawn("run", "--rm", "busybox", "--", "sleep", "100")
    wait_for(lambda: (boxes.get(rt.db, spare.id) or spare).status == "running", 30,
             "the run to take the spare")
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert spare.pid is not None
    assert not still_running({spare.pid}, 10), "the pooled box outlived the run that took it"
    assert mb("gc").returncode == 0
    assert boxes.get(rt.db, spare.id) is None
    assert not (home / "boxes" / spare.id).exists()


def test_a_spare_made_for_another_template_is_never_handed_out(rt: microbox.Runtime) -> None:
    p = rt.pools.add("busybox", size=1)
    (spare,) = _spares(rt)
    boxes.update(rt.db, spare.with_(spare_key="0" * 32))  # as if the agent was rebuilt since
    assert rt.pools.get(p.id).ready == 0  # alive, but no run would take it
    with rt.boxes.run("busybox") as box:
        assert box.id != spare.id
        assert box.run(["true"]).exit_code == 0
    # the run that found only a stale box started a filler, which replaced it
    wait_for(lambda: _full(rt, 1), 60, "the filler to replace the stale box")
    (fresh,) = _spares(rt)
    assert fresh.id != spare.id and boxes.get(rt.db, spare.id) is None
    assert not still_running({spare.pid or 0}, 10)


def test_pool_commands_refuse_bad_input_and_make_nothing(rt: microbox.Runtime) -> None:
    r = mb("pool", "add", "--net", "tap", "busybox")
    assert r.returncode == 2 and b"use --net user or none" in r.stderr
    r = mb("pool", "add", "-n", "0", "busybox")
    assert r.returncode == 2 and b"between 1 and 64" in r.stderr
    r = mb("pool", "rm", "nope")
    assert r.returncode == 1 and b"microbox pool ls" in r.stderr
    assert rt.pools.list() == []

    r = mb("pool", "add", "--json", "-n", "2", "busybox")
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)["data"]
    assert (made["ready"], made["size"]) == (2, 2)
    listed = json.loads(mb("pool", "ls", "--json").stdout)["data"]
    assert [x["id"] for x in listed] == [made["id"]]
    r = mb("image", "rm", "busybox")  # its image is in use, by the pool (not by "spare-...")
    assert r.returncode == 1 and f"used by pool {made['id']}".encode() in r.stderr, r.stderr
    r = mb("pool", "add", "-n", "1", "busybox")  # the same shape: a new size
    assert r.returncode == 0 and len(_spares(rt)) == 1
    assert mb("pool", "rm", made["id"]).returncode == 0
    assert rt.pools.list() == [] and _spares(rt) == []


def test_doctor_names_a_pool_left_short_and_its_fix_fills_it(rt: microbox.Runtime) -> None:
    rt.pools.add("busybox", size=1, memory_mib=192)
    (spare,) = _spares(rt)
    assert spare.pid is not None
    os.kill(spare.pid, signal.SIGKILL)  # a spare's VMM dies with nobody to notice
    assert not still_running({spare.pid}, 10)
    doctor = json.loads(mb("doctor", "--json").stdout)["data"]
    (line,) = [c for c in doctor if c["name"] == "pools"]
    assert line["status"] == "WARN" and "0 of 1 boxes ready" in line["detail"]
    fix = line["fix"].split()
    assert fix == ["microbox", "pool", "add", "busybox", "-n", "1", "--memory", "192"]
    assert mb(*fix[1:]).returncode == 0
    (again,) = _spares(rt)
    assert again.id != spare.id and rt.pools.list()[0].ready == 1
    (line,) = [c for c in json.loads(mb("doctor", "--json").stdout)["data"]
               if c["name"] == "pools"]
    assert line["status"] == "PASS"

    # a run that finds only a dead box in the pool starts one anew, and a filler
    assert again.pid is not None
    os.kill(again.pid, signal.SIGKILL)
    assert not still_running({again.pid}, 10)
    with rt.boxes.run("busybox", memory_mib=192) as box:
        assert box.id != again.id and box.run(["true"]).exit_code == 0
    wait_for(lambda: _full(rt, 1), 60, "the filler to replace the dead box")
    assert [s.id for s in _spares(rt)] != [again.id]


def test_concurrent_runs_never_share_a_pooled_box(rt: microbox.Runtime) -> None:
    """Four runs at once against a pool of two: two take its boxes, two restore
    new ones, and every box is its own."""
    from concurrent.futures import ThreadPoolExecutor

    rt.pools.add("busybox", size=2)
    waiting = {s.id for s in _spares(rt)}

    def one(n: int) -> tuple[str, str]:
        with microbox.Runtime() as own, own.boxes.run("busybox", name=f"at-once-{n}") as box:
            out = box.run(["sh", "-c", "hostname; cat /etc/machine-id"]).stdout.decode()
            host, mid = out.split()
            assert (host, mid) == (box.name, box.id)
            return box.id, host

    with ThreadPoolExecutor(4) as pool_of_threads:
        made = list(pool_of_threads.map(one, range(4)))
    ids = [box_id for box_id, _ in made]
    assert len(set(ids)) == 4
    assert len(waiting & set(ids)) == 2


def _fillers(pool_id: str) -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"])
            if pool_id in (p.info["cmdline"] or []) and "-c" in (p.info["cmdline"] or [])]


def test_a_run_starts_no_filler_while_one_is_at_work(rt: microbox.Runtime, home: Path) -> None:
    """Back-to-back runs do not pile up fillers: while one holds the pool's lock
    (here the test does), a run that takes a box starts none; the one at work
    looks again when it lets the lock go (here the test's own fill)."""
    from microbox import locks
    from microbox.core import pool

    p = rt.pools.add("busybox", size=1)
    with locks.held(home / "pools" / f"{p.id}.lock"):
        with rt.boxes.run("busybox") as box:
            assert box.run(["true"]).exit_code == 0
        assert _fillers(p.id) == []
        assert rt.pools.get(p.id).ready == 0
    pool.fill(rt.db, p.id, lambda _: None)
    assert rt.pools.get(p.id).ready == 1
