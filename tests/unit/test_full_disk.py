"""A full data dir is a full disk, not a corrupt database: real SQLite on a
really full ext4 and tmpfs, as commands, doctor and the read-only readers meet
it; and doctor never advises killing a VMM because the database is unreadable."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from microbox import paths
from microbox.core import doctor, orphans
from microbox.errors import HostError, MicroboxError
from microbox.store import readonly
from microbox.store.db import Database
from tests import fullfs


def one_sentence(err: MicroboxError) -> str:
    text = str(err)
    assert "\n" not in text and text.endswith(".") and ". " not in text, text
    return text


@pytest.fixture(params=["ext4", "tmpfs"])
def full_home(request: pytest.FixtureRequest, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A data dir whose database was made while there was room, then filled."""
    with fullfs.mounted(tmp_path / "home", request.param, 8) as home:
        monkeypatch.setenv("MICROBOX_HOME", str(home))
        Database(paths.database()).close()
        fullfs.fill(home)
        yield home
        gc.collect()  # a failed Database's connection, before the unmount


def test_a_command_on_a_full_disk_is_told_the_disk_is_full(full_home: Path) -> None:
    with pytest.raises(HostError) as err:
        Database(paths.database())
    text = one_sentence(err.value)
    assert err.value.type == "disk_full"
    assert text.startswith(f"the disk holding {full_home} is full (0 MiB free); "
                           "run 'microbox image prune' or 'microbox gc'"), text
    assert "corrupt" not in text and "unreadable" not in text


@pytest.mark.parametrize("kind", ["ext4", "tmpfs"])
def test_a_write_that_finds_the_disk_full_says_so(tmp_path: Path, kind: str) -> None:
    with fullfs.mounted(tmp_path / "home", kind, 8) as home:
        db = Database(home / "microbox.db")
        try:
            fullfs.fill(home)
            with pytest.raises(HostError) as err, db.tx() as c:
                c.execute("CREATE TABLE big (x BLOB)")
                c.execute("INSERT INTO big VALUES (randomblob(4000000))")
            assert err.value.type == "disk_full"
            assert f"the disk holding {home} is full" in one_sentence(err.value)
            assert not db.conn.in_transaction  # rolled back: the connection goes on
            assert db.schema_version > 0
        finally:
            db.close()


def test_doctor_on_a_full_disk_frees_space_and_kills_nothing(
        full_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box_id = "a" * 32
    running = orphans.VMM(4242, 0.0, box_id, full_home / "boxes" / box_id)
    monkeypatch.setattr(orphans, "scan", lambda *_: [running])
    database = doctor._database()
    assert database.status == "FAIL" and database.fix == "microbox image prune"
    assert f"the disk holding {full_home} is full (0 MiB free)" in database.detail
    assert "corrupt" not in database.detail + database.fix
    for check in (doctor._orphans(), doctor._crashed(), doctor._pools()):
        assert check.status == "WARN" and check.fix is None, check
        assert "not checked: the database cannot be read" in check.detail
    assert doctor._orphans().detail.startswith("1 VMM process(es)")
    with pytest.raises(HostError) as err:  # what doctor read it with
        readonly.box_summaries(paths.database())
    assert err.value.type == "disk_full"


def test_a_corrupt_database_is_corrupt_and_still_no_vmm_is_killed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROBOX_HOME", str(tmp_path))
    paths.database().write_bytes(b"this is not a database" * 100)
    with pytest.raises(HostError) as err:
        Database(paths.database())
    assert err.value.type == "corrupt_database"
    assert "is corrupt" in one_sentence(err.value) and err.value.recovery == "microbox doctor"
    database = doctor._database()
    assert database.fix == f"mv {paths.database()} {paths.database()}.corrupt"
    box_id = "b" * 32
    monkeypatch.setattr(orphans, "scan",
                        lambda *_: [orphans.VMM(4242, 0.0, box_id, tmp_path / box_id)])
    check = doctor._orphans()
    assert check.status == "WARN" and check.fix is None and "kill" not in check.detail
