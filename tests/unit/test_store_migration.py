"""Schema 4 on a database an older microbox made: tests/data/schema3-c3bdae9.sql
is the dump of rows written by the store code of commit c3bdae9 (schema 3),
whose `pending`, `image_digest`, `pool` and `spare_key` rode in the spec
JSON. Opened by this Database, it migrates; every field of every row reads
back as that code wrote it, the spec keeps only the user's fields, and the
queries that filter on the new columns use their indexes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from microbox.portmap import PortMap
from microbox.spec import BoxSpec
from microbox.store import boxes, pools, readonly
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database
from microbox.store.migrations import MIGRATIONS
from microbox.store.status import Status

DUMP = Path(__file__).parent.parent / "data" / "schema3-c3bdae9.sql"
HIDDEN = {"_pending_create", "image_digest", "_pool", "_spare_key"}
D1, D2 = "sha256-" + "1" * 64, "sha256-" + "2" * 64
SHAPE = BoxSpec("busybox", cpus=1, memory_mib=256, net="none")

# What c3bdae9's boxes.insert was given (the dump's rows, oldest first).
WRITTEN = [
    BoxRecord(id="a" * 32, name="made", image="busybox", status=Status.CREATED,
              spec=BoxSpec("busybox", cpus=2, memory_mib=512, env={"K": "v", "E": ""},
                           workdir="/srv", user="1000:1000", labels={"team": "x", "k": ""},
                           ports=(PortMap(8080, 80), PortMap(5353, 53, "127.0.0.1", "udp")),
                           allow_hosts=("example.com", "*.pypi.org"),
                           allow_cidrs=("10.1.0.0/16",), deny_all=True,
                           add_hosts=("db:10.0.0.5",)),
              image_digest=D1, created_at=1700000001.5),
    BoxRecord(id="b" * 32, name="pending-one", image="debian", status=Status.STARTING,
              spec=BoxSpec("debian", cold=True), image_digest=D2, pending=True,
              auto_remove=True, pid=4242, pid_start=123.25, created_at=1700000002.0),
    BoxRecord(id="c" * 32, name="spare-0badf00d", image="busybox", status=Status.SPARE,
              spec=SHAPE, image_digest=D1, auto_remove=True, pool="0123456789ab",
              spare_key="f" * 24, pid=4343, pid_start=456.5, started_at=1700000003.5,
              created_at=1700000003.0),
    BoxRecord(id="d" * 32, name="web", image="busybox", status=Status.RUNNING,
              spec=BoxSpec("busybox", ports=(PortMap(8081, 8000),)), image_digest=D1,
              pid=4444, pid_start=789.75, started_at=1700000004.5, created_at=1700000004.0),
    BoxRecord(id="e" * 32, name="held", image="busybox", status=Status.PAUSED,
              spec=BoxSpec("busybox", kernel="/opt/vmlinux", accel="tcg"), image_digest=D1,
              pid=4545, pid_start=1.0, started_at=1700000005.5, created_at=1700000005.0),
    BoxRecord(id="1" * 32, name="off", image="busybox", status=Status.STOPPED,
              spec=BoxSpec("busybox", net="user", allow_private=True),
              started_at=1700000006.5, finished_at=1700000007.0,
              last_error="the agent never answered", created_at=1700000006.0),
    BoxRecord(id="2" * 32, name="dead", image="busybox", status=Status.ERROR,
              spec=BoxSpec("busybox"), image_digest=D2, last_error="its process has exited",
              started_at=1700000008.5, created_at=1700000008.0),
]


def schema3(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(DUMP.read_text())
    conn.close()
    return path


@pytest.fixture
def migrated(tmp_path: Path) -> Database:
    return Database(schema3(tmp_path / "m.db"))


def test_the_dump_is_schema_3_with_the_keys_in_the_spec(tmp_path: Path) -> None:
    conn = sqlite3.connect(schema3(tmp_path / "m.db"))
    assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone() == (3,)
    keys = set()
    for (spec,) in conn.execute("SELECT spec FROM boxes"):
        keys |= set(json.loads(spec)) & HIDDEN
    assert keys == HIDDEN
    conn.close()


def test_every_field_round_trips(migrated: Database) -> None:
    assert migrated.schema_version == len(MIGRATIONS) == 4
    assert boxes.all_boxes(migrated) == WRITTEN
    for record in WRITTEN:
        assert boxes.get(migrated, record.id) == record
        assert boxes.resolve(migrated, record.name) == record
    # written back by this code and read again: the same
    boxes.update(migrated, *WRITTEN)
    assert boxes.all_boxes(migrated) == WRITTEN
    assert pools.all_pools(migrated) == [pools.PoolRow("0123456789ab", SHAPE, 2, 1700000000.0)]


def test_the_values_moved_to_columns(migrated: Database) -> None:
    rows = migrated.conn.execute(
        "SELECT id, spec, pending, image_digest, pool, spare_key FROM boxes "
        "ORDER BY created_at").fetchall()
    for row, record in zip(rows, WRITTEN, strict=True):
        assert not set(json.loads(row["spec"])) & HIDDEN
        assert BoxSpec.from_json(json.loads(row["spec"])) == record.spec
        assert (row["pending"], row["image_digest"], row["pool"], row["spare_key"]) == (
            int(record.pending), record.image_digest, record.pool, record.spare_key)


def test_queries_on_the_columns(migrated: Database) -> None:
    spare = WRITTEN[2]
    assert boxes.spares(migrated) == [spare]
    assert boxes.spares(migrated, pool="0123456789ab") == [spare]
    assert boxes.spares(migrated, key="f" * 24) == [spare]
    assert boxes.spares(migrated, pool="other") == [] == boxes.spares(migrated, key="k")
    assert boxes.any_spare(migrated)
    for column, value in (("pool", "p"), ("spare_key", "k"), ("status", "spare")):
        plan = " ".join(r[3] for r in migrated.conn.execute(
            f"EXPLAIN QUERY PLAN SELECT * FROM boxes WHERE {column}=?", (value,)))
        assert f"USING INDEX boxes_{column}" in plan
    taken = spare.with_(name="taken", pool=None, spare_key=None, status=Status.STARTING,
                        pending=True)
    assert boxes.take_spare(migrated, spare, taken)
    assert boxes.get(migrated, spare.id) == taken and not boxes.any_spare(migrated)


def test_doctor_reads_pools_before_and_after_the_migration(tmp_path: Path) -> None:
    path = schema3(tmp_path / "m.db")
    want = [("0123456789ab", json.loads(json.dumps(SHAPE.to_json())), 2, ["c" * 32])]
    assert readonly.pool_summaries(path) == want  # schema 3: doctor does not migrate
    Database(path).close()
    assert readonly.pool_summaries(path) == want


def test_a_row_an_older_microbox_writes_after_the_migration(migrated: Database) -> None:
    """A filler or server of the older version, still running, writes the keys
    into the spec and leaves the new columns at their defaults."""
    spec = {**SHAPE.to_json(), "_pending_create": True, "image_digest": D1,
            "_pool": "0123456789ab", "_spare_key": "k"}
    migrated.conn.execute(
        "INSERT INTO boxes (id, name, image, spec, status, auto_remove, created_at) "
        "VALUES (?, ?, ?, ?, ?, 1, 5.0)",
        ("9" * 32, "spare-old", "busybox", json.dumps(spec), "starting"))
    got = boxes.get(migrated, "9" * 32)
    assert got is not None and got.spec == SHAPE
    assert (got.pending, got.image_digest, got.pool, got.spare_key) == (
        True, D1, "0123456789ab", "k")
