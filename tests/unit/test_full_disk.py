"""A full data dir is a full disk, not a corrupt database: real SQLite on a
really full ext4 and tmpfs, as commands, doctor and the read-only readers meet
it; and doctor never advises killing a VMM because the database is unreadable."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from microbox import diskspace, paths
from microbox.core import doctor, orphans, snapspace, templates
from microbox.core.boxdir import BoxDir
from microbox.errors import HostError, MicroboxError, VMError
from microbox.spec import BoxSpec
from microbox.store import readonly
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database
from microbox.store.status import Status
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


# -- snapshots ------------------------------------------------------------------------


def a_box(home: Path, memory_mib: int = 256) -> tuple[BoxRecord, BoxDir]:
    box = BoxDir(home / "boxes" / ("c" * 32))
    box.path.mkdir(parents=True)
    box.disk.write_bytes(b"q" * 4096)
    return BoxRecord(id="c" * 32, name="sb", image="busybox",
                     spec=BoxSpec("busybox", memory_mib=memory_mib), status=Status.RUNNING), box


def test_diskspace_tells_tmpfs_and_its_mount(tmp_path: Path) -> None:
    with fullfs.mounted(tmp_path / "t", "tmpfs", 16) as where:
        fs = diskspace.of(where / "not" / "yet")
        assert (fs.type, fs.mount, str(fs)) == ("tmpfs", str(where), f"the tmpfs at {where}")
        assert fs.free == 16 * diskspace.MIB and not fs.nearly_full
        fullfs.fill(where)
        assert diskspace.of(where).free == 0 and diskspace.of(where).nearly_full


def test_a_snapshot_that_cannot_fit_is_refused_naming_need_free_and_filesystem(
        tmp_path: Path) -> None:
    record, box = a_box(tmp_path)
    with fullfs.mounted(tmp_path / "snapshots", "tmpfs", 64) as root, \
            pytest.raises(HostError) as err:
        snapspace.check(record, box, root)
    text = one_sentence(err.value)
    assert err.value.type == "disk_full"
    assert text.startswith(f"a snapshot of box 'sb' needs up to 529 MiB on the tmpfs at {root}, "
                           "which has 64 MiB free, so it was not taken; run 'microbox image "
                           "prune'"), text
    snapspace.check(record, box, tmp_path)  # the host's own disk has the room


def test_the_holes_of_a_ram_file_on_tmpfs_count_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Saving a box whose RAM is mapped from a sparse tmpfs file faults in its
    holes, each a page of that tmpfs: a full one killed the box with SIGBUS."""
    monkeypatch.setenv("MICROBOX_HOME", str(tmp_path))
    record, box = a_box(tmp_path)
    with fullfs.mounted(paths.templates_dir(), "tmpfs", 64):
        template = templates.Template(paths.templates_dir() / "k")
        template.path.mkdir()
        with open(template.mem, "wb") as f:
            f.truncate(256 * diskspace.MIB)  # all holes
        templates.mark(box, template)
        with pytest.raises(HostError) as err:
            snapspace.check(record, box, paths.snapshots_dir())
        assert f"needs up to 256 MiB on the tmpfs at {paths.templates_dir()}" in str(err.value)
        with open(template.mem, "r+b") as f:  # its pages written: no hole to fault in
            for _ in range(63):
                f.write(b"\1" * diskspace.MIB)
        with pytest.raises(HostError, match="needs up to 193 MiB"):
            snapspace.check(record, box, paths.snapshots_dir())


def test_a_save_that_failed_on_a_full_filesystem_ran_out_of_space(tmp_path: Path) -> None:
    record, _ = a_box(tmp_path)
    failed = VMError("saving the box's state failed (migration failed)")
    assert snapspace.out_of_space(record, tmp_path, failed) is None  # room enough: not space
    with fullfs.mounted(tmp_path / "snapshots", "tmpfs", 4) as root:
        fullfs.fill(root)
        err = snapspace.out_of_space(record, root, failed)
        assert err is not None and err.type == "disk_full"
        assert one_sentence(err).startswith(f"saving box 'sb' ran out of space on the tmpfs at "
                                            f"{root} (0 MiB free), so no snapshot was made; ")
        assert snapspace.out_of_space(record, root, ValueError("x")) is None
    enospc = OSError(28, "No space left on device")
    assert snapspace.out_of_space(record, tmp_path, enospc) is not None
