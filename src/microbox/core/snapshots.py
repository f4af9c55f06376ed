"""Snapshots of running boxes, in the same form as warm-start templates
(docs/snapshots.md), so boxes restored from one share its RAM copy-on-write.

    <home>/snapshots/<id>/   mem, state, disk.qcow2 (as a template) + meta.json

Taking one: the box is stopped for a moment, its whole state (RAM included)
streamed to a file and its disk overlay copied, then it runs on. The stream is
then split into the RAM, written into the sparse file `mem`, and the rest,
`state`, as QEMU saves a VMM whose RAM is that file (vmm/ramsplit.py). The
directory is renamed into place when whole. One that would not fit is refused
before the box stops (core/snapspace.py).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from microbox import failpoints, locks, paths
from microbox.core import freeze, snapspace, templates
from microbox.core.boxdir import BoxDir, for_box
from microbox.core.log import Log, quiet
from microbox.core.templates import Template
from microbox.errors import InvalidSpec, NotFound, StateError, VMError
from microbox.spec import BoxSpec, validate_name
from microbox.store import events
from microbox.store.boxes import BoxRecord
from microbox.vmm import migration, qmp, ramsplit
from microbox.vmm.qemu_argv import RAM_ID

if TYPE_CHECKING:
    from microbox.core import lifecycle
    from microbox.store.db import Database

SAVE_TIMEOUT = 60.0
REMOVED = "removed"  # in a snapshot dir: removed with -f, kept while boxes use it


@dataclass(frozen=True)
class Snapshot:
    id: str
    name: str
    box: str  # the name of the box it was taken of
    created_at: float
    spec: BoxSpec
    image_digest: str
    auto: bool  # made by fork: removed by gc once no box uses it
    size: int

    @property
    def path(self) -> Path:
        return paths.snapshots_dir() / self.id

    @property
    def template(self) -> Template:
        return Template(self.path)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "box": self.box,
                "created_at": self.created_at, "image": self.spec.image,
                "image_digest": self.image_digest, "auto": self.auto, "size": self.size,
                "cpus": self.spec.cpus, "memory_mib": self.spec.memory_mib,
                "used_by": users(self)}


def _load(d: Path) -> Snapshot | None:
    try:
        meta = json.loads((d / "meta.json").read_text())
        size = sum(f.stat().st_blocks * 512 for f in d.iterdir() if f.is_file())
        return Snapshot(meta["id"], meta["name"], meta["box"], meta["created_at"],
                        BoxSpec.from_json(meta["spec"]), meta["image_digest"],
                        bool(meta.get("auto")), size)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def all_snapshots() -> list[Snapshot]:
    root = paths.snapshots_dir()
    if not root.is_dir():
        return []
    found = [_load(d) for d in root.iterdir()
             if d.is_dir() and not d.name.startswith(".") and not (d / REMOVED).exists()]
    return sorted((s for s in found if s is not None), key=lambda s: s.created_at)


def get(ref: str) -> Snapshot:
    """A snapshot by name, id or unique id prefix."""
    snaps = all_snapshots()
    for s in snaps:
        if s.name == ref or s.id == ref:
            return s
    matches = [s for s in snaps if s.id.startswith(ref)] if len(ref) >= 4 else []
    if len(matches) == 1:
        return matches[0]
    raise NotFound(f"no snapshot named {ref!r}", "microbox snapshot ls")


def users(snap: Snapshot) -> list[str]:
    """Ids of the boxes whose disks are backed by the snapshot."""
    root = paths.boxes_dir()
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir()
                  if templates.used_by(BoxDir(d)) == templates.SNAPSHOT + snap.id)


def create(record: BoxRecord, name: str | None = None, *, auto: bool = False,
           log: Log = quiet) -> Snapshot:
    """Snapshot the running or paused box `record`; it keeps its status."""
    if name is not None:
        validate_name(name)
        if any(s.name == name for s in all_snapshots()):
            raise InvalidSpec(f"a snapshot named {name!r} exists already; pick another name")
    if not record.image_digest:
        raise StateError(f"box '{record.name}' has no image digest to snapshot against")
    if record.spec.mounts:
        # QEMU will not migrate a VM with a 9p export mounted, and a volume's
        # disk is no part of the box: refused whole, before anything stops
        raise StateError(f"box '{record.name}' has mounts (-v {record.spec.mounts[0]}); "
                         "snapshots and forks are of boxes without -v", "microbox commit "
                         f"{record.name} NAME", "to keep its disk as an image instead")
    sid = uuid.uuid4().hex
    root = paths.snapshots_dir()
    box = for_box(record.id)
    snapspace.check(record, box, root)  # before the box stops, with nothing made
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = root / f".tmp-{sid[:12]}"
    tmp.mkdir(mode=0o700)
    making = locks.try_acquire(tmp / "making.lock")  # gc leaves a held one alone
    try:
        started = time.monotonic()
        try:
            _save_full(box, tmp)
        except VMError:
            if not box.alive():
                raise _died(record) from None
            raise
        log(f"box state saved in {time.monotonic() - started:.3f} s")
        _to_template_form(tmp)
        meta = {"id": sid, "name": name or f"{record.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                "box": record.name, "created_at": time.time(), "spec": record.spec.to_json(),
                "image_digest": record.image_digest, "auto": auto,
                "backing": templates.used_by(box)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        (tmp / "making.lock").unlink()
        os.rename(tmp, root / sid)
    except BaseException as exc:
        full = snapspace.out_of_space(record, tmp, exc)  # measured before the cleanup
        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from None
        raise
    finally:
        if making is not None:
            making.close()
    snap = _load(root / sid)
    assert snap is not None
    if not auto:  # a fork's own snapshot: the fork is the event
        events.of_box("snapshot", record, snapshot=snap.name)
    return snap


def start_box(db: Database, snap: Snapshot, *, name: str | None, auto_remove: bool,
              attached: bool, log: Log, commit: bool = True) -> lifecycle.Started:
    """A new box restored from `snap` and started (lifecycle.start's `commit`)."""
    from microbox.core import lifecycle
    from microbox.images import filestore

    with filestore.using():
        record, lock = lifecycle.create(db, snap.spec, name=name, auto_remove=auto_remove,
                                        start_next=True, snapshot=snap.template,
                                        image_digest=snap.image_digest)
    started = lifecycle.start(db, record, lock, attached=attached, log=log, commit=commit)
    if commit:  # a fork's clones are recorded by the fork, once all run
        events.of_box("restore", started.record, snapshot=snap.name)
    return started


def _died(record: BoxRecord) -> StateError:
    return StateError(f"box '{record.name}' stopped running while it was being saved: its "
                      "VMM exited", f"microbox delete {record.name}", "to clear it")


def _save_full(box: BoxDir, dest: Path) -> None:
    """The box's whole state (RAM included) to dest/full and its disk to
    dest/disk.qcow2, taken while its vCPUs are stopped; then it runs on (and
    if this process dies in between, the next command on the box lets it run:
    core/freeze.py)."""
    with qmp.session(box.qmp, box.qmp_lock, SAVE_TIMEOUT) as mon, freeze.stopped(box, mon):
        migration.save(mon, dest / "full", ignore_shared=False,
                       what="saving the box's state", timeout=SAVE_TIMEOUT)
        failpoints.reach("snapshot-saved")
        shutil.copyfile(box.disk, dest / "disk.qcow2")


def _to_template_form(d: Path) -> None:
    """Split d/full into the RAM file d/mem and the rest, d/state: what a VMM
    whose RAM is d/mem would save (vmm/ramsplit.py)."""
    try:
        ramsplit.split(d / "full", RAM_ID, d / "mem", d / "state")
    finally:
        (d / "full").unlink(missing_ok=True)
    for name in ("state", "disk.qcow2"):
        os.chmod(d / name, 0o444)


def remove(snap: Snapshot, force: bool = False) -> None:
    """Delete a snapshot. While boxes restored from it exist this needs force,
    and its files stay (hidden) until gc finds no box using them."""
    used = users(snap)
    if used and not force:
        raise StateError(f"snapshot {snap.name!r} backs the disks of {len(used)} box(es)",
                         f"microbox snapshot rm -f {snap.name}",
                         "to remove it; those boxes keep working")
    with locks.held(paths.snapshots_dir() / ".lock"):
        if used:  # never moved: its disk is the backing file of theirs
            (snap.path / REMOVED).write_text(f"{time.time():.0f}\n")
        else:
            shutil.rmtree(snap.path)


def sweep(referenced: set[str], dry_run: bool) -> list[str]:
    """Removed (-f) snapshots and fork's own ones that no box uses any more, and
    dead half-made ones."""
    root = paths.snapshots_dir()
    out: list[str] = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if not d.is_dir():
            continue
        if templates.SNAPSHOT + d.name in referenced:
            continue
        snap = _load(d)
        doomed = (d / REMOVED).exists() or (snap is not None and snap.auto)
        if d.name.startswith(".tmp-"):
            doomed = not locks.is_held(d / "making.lock")  # an interrupted snapshot
        if doomed:
            if not dry_run:
                shutil.rmtree(d, ignore_errors=True)
            out.append(str(d))
    return out
