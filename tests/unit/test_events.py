"""The event log (store/events.py): whole lines from many processes at once,
rotation that keeps one old file, a follower that survives rotation, and the
readers' since/until/filters."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from microbox.errors import UsageError
from microbox.store import events
from microbox.store.events import Event


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("MICROBOX_HOME", str(tmp_path))
    yield tmp_path


def _writer(home: str, who: int, n: int) -> None:
    os.environ["MICROBOX_HOME"] = home
    for i in range(n):
        events.append(Event(time.time(), "start", f"{who:032x}", f"w{who}", "busybox",
                            {"i": i, "pad": "x" * 900}))


def test_concurrent_appends_from_processes_stay_whole_lines(home: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(home), w, 200)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = events.log_path().read_bytes().splitlines()
    assert len(lines) == 800
    seen = [json.loads(line) for line in lines]  # each line parses whole
    for w in range(4):
        mine = [e["detail"]["i"] for e in seen if e["name"] == f"w{w}"]
        assert mine == list(range(200))  # each writer's lines in its own order


def test_rotation_keeps_one_old_file_and_bounds_the_log() -> None:
    for i in range(100):
        events.append(Event(float(i), "stop", "id", "b", "img", {"i": i}), rotate_at=2000)
    path = events.log_path()
    old = path.with_name("events.log.1")
    assert path.stat().st_size <= 2000 and old.stat().st_size <= 2000
    assert not path.with_name("events.log.2").exists()
    got = [e.detail["i"] for e in events.read()]
    assert got == list(range(got[0], 100))  # the newest kept, none torn, in order
    assert len(got) > 20


def test_a_follower_survives_rotation() -> None:
    stop = threading.Event()
    seen: list[int] = []

    def follow() -> None:
        for e in events.read(follow=True, stop=stop, poll=0.005):
            seen.append(e.detail["i"])

    t = threading.Thread(target=follow)
    t.start()
    for i in range(60):
        events.append(Event(time.time(), "pause", "id", "b", "img", {"i": i}), rotate_at=1000)
        time.sleep(0.02)  # a rotation every ~10 events, several polls apart
    deadline = time.time() + 5
    while len(seen) < 60 and time.time() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join(5)
    assert seen == list(range(60))


def test_the_tail_reads_an_old_file_to_its_end_before_the_new() -> None:
    events.append(Event(1.0, "create", "id", "b", "img"))
    tail = events._Tail(events.log_path())
    assert len(tail.lines()) == 1
    # written and rotated between two reads: both lines still come
    events.append(Event(2.0, "start", "id", "b", "img"))
    events.append(Event(3.0, "stop", "id", "b", "img"), rotate_at=1)
    got = [json.loads(line)["type"] for line in tail.lines()]
    tail.close()
    assert got == ["start", "stop"]


def test_since_until_and_filters() -> None:
    for t, typ, name, image in [(10, "create", "web", "busybox"), (20, "start", "web", "busybox"),
                                (30, "start", "db", "debian"), (40, "crash", "db", "debian")]:
        events.append(Event(float(t), typ, f"{name}-id-{t}", name, image))
    def types(**kw: object) -> list[str]:
        return [e.type for e in events.read(**kw)]  # type: ignore[arg-type]
    assert types() == ["create", "start", "start", "crash"]
    assert types(since=20.0) == ["start", "start", "crash"]
    assert types(until=20.0) == ["create", "start"]
    assert types(filters={"box": "db"}) == ["start", "crash"]
    assert types(filters={"type": ["create", "crash"]}) == ["create", "crash"]
    assert types(filters={"box": "web", "type": "start"}) == ["start"]
    assert types(filters={"image": "debian"}, since=35.0) == ["crash"]
    assert [e.name for e in events.read(filters={"box": "db-id"})] == ["db", "db"]  # id prefix


def test_follow_ends_at_until() -> None:
    events.append(Event(time.time(), "start", "id", "b", "img"))
    started = time.monotonic()
    got = list(events.read(follow=True, until=time.time() + 0.3, poll=0.05))
    assert len(got) == 1 and time.monotonic() - started < 3


def test_a_long_detail_is_cut_and_a_foreign_line_skipped() -> None:
    events.append(Event(1.0, "commit", "id", "b", "img", {"big": "y" * 10_000}))
    with open(events.log_path(), "ab") as f:
        f.write(b"not json\n")
    (e,) = list(events.read())
    assert e.detail == {"detail_bytes": pytest.approx(10_100, abs=200)}
    assert len(events.log_path().read_bytes().splitlines()[0]) < events.MAX_LINE


def test_record_never_raises(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (home / "file").write_text("")
    monkeypatch.setenv("MICROBOX_HOME", str(home / "file"))  # no directory to write in
    with pytest.raises(OSError):
        events.append(Event(1.0, "start", "id", "b", "img"))
    events.record("start", "id", "b", "img")  # the action goes on


def test_a_detail_may_share_a_field_name() -> None:
    events.record("commit", "id", "b", "img", image="new", name="n")
    (e,) = list(events.read())
    assert (e.image, e.name, e.detail) == ("img", "b", {"image": "new", "name": "n"})


def test_parse_time_and_filters() -> None:
    assert events.parse_time("1700000000") == 1700000000.0
    assert events.parse_time("10m", now=1000.0) == 400.0
    assert events.parse_time("1h30m", now=10_000.0) == 10_000.0 - 5400
    assert events.parse_time("2026-01-02T00:00:00Z") == 1767312000.0
    with pytest.raises(UsageError, match="ISO 8601"):
        events.parse_time("yesterday")
    assert events.parse_filters(["box=a", "box=b", "type=crash"]) == \
        {"box": ["a", "b"], "type": ["crash"]}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        events.parse_filters(["box"])
    with pytest.raises(UsageError, match="unknown event filter"):
        events.parse_filters(["colour=red"])
