"""The SQLite store: migrations, refusal of newer schemas, names and prefixes."""

from __future__ import annotations

import gc
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path

import pytest

from microbox import paths
from microbox.core import maintenance
from microbox.core.boxdir import BoxDir
from microbox.errors import HostError, NotFound, UsageError
from microbox.spec import BoxSpec
from microbox.store import boxes
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database
from microbox.store.migrations import MIGRATIONS
from microbox.store.status import Status


def rec(box_id: str, name: str) -> BoxRecord:
    return BoxRecord(id=box_id, name=name, image="busybox", spec=BoxSpec("busybox"),
                     status=Status.CREATED)


def test_fresh_database_is_migrated_in_wal_mode(tmp_path: Path) -> None:
    db = Database(tmp_path / "m.db")
    assert db.schema_version == len(MIGRATIONS)
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    again = Database(tmp_path / "m.db")  # idempotent
    assert again.schema_version == len(MIGRATIONS)
    again.close()


def test_newer_database_is_refused(tmp_path: Path) -> None:
    Database(tmp_path / "m.db").close()
    conn = sqlite3.connect(tmp_path / "m.db")
    conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (len(MIGRATIONS) + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(HostError, match="newer microbox"):
        Database(tmp_path / "m.db")


def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "m.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(HostError, match="is corrupt"):
        Database(tmp_path / "m.db")


def test_names_ids_and_prefixes(tmp_path: Path) -> None:
    db = Database(tmp_path / "m.db")
    boxes.insert(db, rec("abc1" + "0" * 28, "one"))
    boxes.insert(db, rec("abc2" + "0" * 28, "two"))
    assert boxes.resolve(db, "one").name == "one"
    assert boxes.resolve(db, "abc1").name == "one"
    assert boxes.resolve(db, "abc2" + "0" * 28).name == "two"
    with pytest.raises(UsageError, match=r"matches 2 boxes: one \(abc1.*two \(abc2"):
        boxes.resolve(db, "abc")
    with pytest.raises(NotFound):
        boxes.resolve(db, "nope")
    with pytest.raises(UsageError, match="already taken"):
        boxes.insert(db, rec("f" * 32, "one"))
    assert [b.name for b in boxes.all_boxes(db)] == ["one", "two"]
    db.close()


def test_update_and_delete_roundtrip(tmp_path: Path) -> None:
    db = Database(tmp_path / "m.db")
    r = rec("d" * 32, "x")
    boxes.insert(db, r)
    spec = BoxSpec("busybox", cpus=2, env={"K": "v"})
    boxes.update(db, r.with_(status="running", pid=42, pid_start=1.5, spec=spec,
                             image_digest="sha256-x", pending=True))
    got = boxes.resolve(db, "x")
    assert (got.status, got.pid, got.pid_start, got.spec) == ("running", 42, 1.5, spec)
    assert (got.image_digest, got.pending) == ("sha256-x", True)
    boxes.delete(db, r.id)
    assert boxes.all_boxes(db) == []
    db.close()


def test_gc_spares_held_dirs_and_dirs_whose_row_appeared(monkeypatch: pytest.MonkeyPatch) -> None:
    """gc removes only dirs nobody holds and no row names, both checked under the dir's lock."""
    home = Path(tempfile.mkdtemp(prefix="mbg-", dir="/tmp"))  # short: box dirs hold sockets
    monkeypatch.setenv("MICROBOX_HOME", str(home))
    db = Database(home / "m.db")
    held, late, stray = (BoxDir(paths.boxes_dir() / (c * 32)) for c in "abc")
    lock = held.create()  # a create in progress: dir made, lock held, no row yet
    late.create().close()
    stray.path.mkdir()  # left by a crash between mkdir and flock
    # A create that finished after gc listed the rows: its row is read again under the lock.
    boxes.insert(db, rec(late.path.name, "late"))
    assert not maintenance._remove_unowned(db, late, dry_run=False) and late.exists()
    report = maintenance.gc(db)
    assert report.dirs == [str(stray.path)]
    assert held.exists() and late.exists() and not stray.exists()
    lock.close()
    db.close()
    shutil.rmtree(home)


@pytest.mark.parametrize("threads", [4, 16])
def test_one_database_from_many_threads_loses_no_write(tmp_path: Path, threads: int) -> None:
    """A shared connection interleaved BEGIN/COMMITs and lost 927 of 1,200 inserts."""
    db = Database(tmp_path / "m.db")
    per_thread = 1200 // threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                boxes.insert(db, rec(f"{t:04x}{i:028x}", f"t{t}-{i}"))
                assert boxes.get(db, f"{t:04x}{i:028x}") is not None
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert len(boxes.all_boxes(db)) == per_thread * threads
    db.close()


def test_a_finished_thread_closes_its_connection(tmp_path: Path) -> None:
    db = Database(tmp_path / "m.db")
    t = threading.Thread(target=lambda: boxes.all_boxes(db))
    t.start()
    t.join()
    gc.collect()
    assert len(db._held) == 1  # only the main thread's (the migration's) is left
    db.close()
    assert len(db._held) == 0


def test_gc_removes_the_work_of_a_killed_build_and_nothing_at_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `run` killed while it built its image left images/tmp/tmpXXXX, which
    only the next build or pull swept (bench/faults.py, kind first-run)."""
    from microbox import locks
    from microbox.images import filestore

    monkeypatch.setenv("MICROBOX_HOME", str(tmp_path / "home"))
    db = Database(paths.database())
    killed = Path(tempfile.mkdtemp(dir=filestore.staging_dir()))
    (killed / filestore.BUSY).touch()  # its holder is gone
    (killed / "rootfs.tar").write_bytes(b"x" * 100)
    working = Path(tempfile.mkdtemp(dir=filestore.staging_dir()))
    with locks.acquire(working / filestore.BUSY):
        assert maintenance.gc(db, dry_run=True).staging == [str(killed)] and killed.exists()
        assert maintenance.gc(db).staging == [str(killed)]
        assert not killed.exists() and working.exists()
    db.close()
