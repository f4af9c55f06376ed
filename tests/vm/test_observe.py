"""Stats, events and /metrics against real boxes (docs/observe.md): each figure
moves when the box does the work it measures; each action leaves its event,
a crash exactly one; the metrics page parses with prometheus_client's parser."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

import microbox
from microbox.store import events
from microbox.vmm import process
from tests import standin
from tests.vm.conftest import wait_for
from tests.vm.helpers import mb

MIB = 1024 * 1024


class _Big(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"x" * (2 * MIB)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def big_server() -> Iterator[int]:
    """A host HTTP server on 127.0.0.1 answering 2 MiB; yields its port."""
    with standin.loopback_server(_Big) as port:
        yield port


def test_stats_move_when_a_box_works(rt: microbox.Runtime, big_server: int) -> None:
    with rt.boxes.run("busybox", allow_private=True) as box:
        idle = box.stats(interval=1.0)
        assert idle.status == "running" and idle.cpus == 1
        assert idle.memory_total and 100 * MIB < idle.memory_total <= 256 * MIB
        assert idle.memory_used and 0 < idle.memory_used < idle.memory_total
        assert idle.host_pss and idle.host_pss > MIB
        assert idle.pids and idle.pids > 1
        assert idle.cpu_percent is not None and idle.cpu_seconds
        assert idle.disk_used is not None and idle.net_refused == 0

        loop = box.exec(["sh", "-c", "while :; do :; done"])
        busy = box.stats(interval=1.5)
        loop.kill()
        loop.wait()
        assert busy.cpu_percent is not None and busy.cpu_percent > 50, (idle, busy)
        assert busy.cpu_percent > idle.cpu_percent + 30

        sleeps = box.exec(["sh", "-c", "sleep 60 & sleep 60 & sleep 60 & wait"])
        wait_for(lambda: (box.stats(0).pids or 0) >= idle.pids + 4, 30, "the sleeps")
        sleeps.kill()
        sleeps.wait()

        r = box.run(["sh", "-c", "dd if=/dev/zero of=/root/big bs=1M count=16 2>/dev/null"
                     " && sync"], timeout=120)
        assert r.exit_code == 0, r
        wrote = box.stats(0)
        assert wrote.disk_used is not None and wrote.disk_used >= idle.disk_used + 12 * MIB

        r = box.run(["wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{big_server}/"],
                    timeout=120)
        assert r.exit_code == 0, r
        wait_for(lambda: (box.stats(0).net_rx or 0) >= 2 * MIB, 10, "the proxy's counters")
        got = box.stats(0)
        assert got.net_tx and got.net_tx > 50 and got.net_connections == 1

        r = box.run(["wget", "-q", "-O", "/dev/null", "http://169.254.169.254/"], timeout=60)
        assert r.exit_code != 0
        wait_for(lambda: box.stats(0).net_refused == 1, 10, "the refusal counted")

        # the CLI: one reading as an envelope; a stream as JSON lines
        out = json.loads(mb("stats", "--no-stream", "--json", box.name).stdout)
        (row,) = out["data"]
        assert row["name"] == box.name and row["memory_total"] == got.memory_total


def test_stats_streams_json_lines(rt: microbox.Runtime) -> None:
    with rt.boxes.run("busybox") as box:
        p = subprocess.Popen([sys.executable, "-m", "microbox", "stats", "--interval", "0.3",
                              box.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert p.stdout is not None
            rows = [json.loads(p.stdout.readline()) for _ in range(3)]
        finally:
            p.send_signal(signal.SIGINT)
            p.wait(30)
        assert [r["name"] for r in rows] == [box.name] * 3
        assert all(r["cpu_percent"] is not None for r in rows)
        assert rows[0]["time"] < rows[1]["time"] < rows[2]["time"]


def _types(name: str) -> list[str]:
    return [e.type for e in events.read(filters={"box": name})]


def test_events_for_each_action_and_one_crash(rt: microbox.Runtime) -> None:
    box = rt.boxes.create("busybox", name="ev", start=True)
    try:
        box.pause()
        box.resume()
        snap = box.snapshot("ev-snap")
        (clone,) = box.fork(1, name_prefix="evf")
        clone.delete(force=True)
        box.stop()
        box.commit("ev-image")
        rt.images.remove("ev-image")
        box.start()
        assert _types("ev") == ["create", "start", "pause", "resume", "snapshot", "stop",
                                "commit", "start"]
        commit = next(events.read(filters={"box": "ev", "type": "commit"}))
        assert commit.detail == {"new_image": "ev-image"}
        assert _types(clone.name) == ["fork", "delete"]
        fork = next(events.read(filters={"box": clone.name, "type": "fork"}))
        assert fork.detail["source"] == "ev" and fork.image == "busybox"
        restored = rt.boxes.restore(snap.name, name="evr")
        restored.delete(force=True)
        assert _types("evr") == ["create", "start", "restore", "delete"]
        rt.snapshots.remove(snap.name)

        # a crash: the VMM killed; several commands notice it at once, one records it
        box.reload()
        assert box.record.pid is not None
        os.kill(box.record.pid, signal.SIGKILL)
        process.wait_exit(box.record.pid, 10)
        lookers = [subprocess.Popen([sys.executable, "-m", "microbox", "ls", "-a"],
                                    stdout=subprocess.DEVNULL) for _ in range(4)]
        rt.boxes.list(all=True)
        for p in lookers:
            assert p.wait(60) == 0
        assert _types("ev").count("crash") == 1
        crash = next(events.read(filters={"box": "ev", "type": "crash"}))
        assert crash.detail == {"was": "running"}
    finally:
        box.delete(force=True)
    assert _types("ev")[-2:] == ["crash", "delete"]

    # the CLI: filters and --since; one JSON line each with --json
    out = mb("events", "--json", "--since", "10m", "-f", "box=ev", "-f", "type=crash").stdout
    (line,) = out.splitlines()
    assert json.loads(line)["type"] == "crash"


def test_a_pool_take_and_a_follower(rt: microbox.Runtime) -> None:
    seen: list[str] = []
    stop = threading.Event()

    def follow() -> None:
        for e in rt.events(follow=True, stop=stop, filters={"box": "taken"}):
            seen.append(e.type)

    t = threading.Thread(target=follow)
    t.start()
    try:
        rt.pools.add("busybox", size=1)
        with rt.boxes.run("busybox", name="taken") as box:
            assert box.run(["true"]).exit_code == 0
        wait_for(lambda: seen[-1:] == ["delete"], 10, "the follower to see the delete")
    finally:
        stop.set()
        t.join(10)
    assert seen == ["take", "delete"]


def test_metrics_parse_with_prometheus_client(rt: microbox.Runtime) -> None:
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from microbox.api import create_app
    from microbox.sdk.aio import AsyncRuntime

    with rt.boxes.run("busybox", name="metered") as box, \
            TestClient(create_app(AsyncRuntime(), "tok")) as client:
        assert client.get("/metrics").status_code == 401
        page = client.get("/metrics", headers={"Authorization": "Bearer tok"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(page.text)}
        mine = {f: [s for s in families[f].samples if s.labels.get("name") == "metered"]
                for f in families}
        (total,) = mine["microbox_box_memory_total_bytes"]
        assert total.labels == {"box_id": box.id, "name": "metered", "image": "busybox"}
        assert total.value > 100 * MIB
        assert mine["microbox_box_cpu_seconds"][0].value > 0
        assert mine["microbox_box_tasks"][0].value > 1
        running = [s for s in families["microbox_boxes"].samples
                   if s.labels["status"] == "running"]
        assert running and running[0].value >= 1
        stats = client.get(f"/boxes/{box.name}/stats", params={"interval": 0.2},
                           headers={"Authorization": "Bearer tok"}).json()
        assert stats["ok"] and stats["data"]["memory_total"] == total.value
