"""Snapshots of running boxes, in the same form as warm-start templates
(docs/snapshots.md), so boxes restored from one share its RAM copy-on-write.

    <home>/snapshots/<id>/   mem, state, disk.qcow2 (as a template) + meta.json

Taking one: the box is stopped for a moment, its whole state (RAM included)
streamed to a file and its disk overlay copied, then it runs on. The stream is
then loaded into a VMM whose RAM is a file and saved again without RAM: that
file is the snapshot's `mem`. The directory is renamed into place when whole.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microbox import locks, paths
from microbox.core import templates, vm
from microbox.core.boxdir import BoxDir, for_box
from microbox.core.templates import Template
from microbox.errors import InvalidSpec, NotFound, StateError
from microbox.net import tap
from microbox.spec import BoxSpec, validate_name
from microbox.store.boxes import BoxRecord
from microbox.vmm import accel, migration, qmp

SAVE_TIMEOUT = 60.0
PREFIX = "snapshots/"  # how a box dir names the snapshot its disk is backed by
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
                  if templates.used_by(BoxDir(d)) == PREFIX + snap.id)


def create(record: BoxRecord, name: str | None = None, *, auto: bool = False,
           log: vm.Log = vm._quiet) -> Snapshot:
    """Snapshot the running or paused box `record`; it keeps its status."""
    if name is not None:
        validate_name(name)
        if any(s.name == name for s in all_snapshots()):
            raise InvalidSpec(f"a snapshot named {name!r} exists already; pick another name")
    if not record.image_digest:
        raise StateError(f"box '{record.name}' has no image digest to snapshot against")
    sid = uuid.uuid4().hex
    root = paths.snapshots_dir()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = root / f".tmp-{sid[:12]}"
    tmp.mkdir(mode=0o700)
    making = locks.try_acquire(tmp / "making.lock")  # gc leaves a held one alone
    try:
        box = for_box(record.id)
        started = time.monotonic()
        _save_full(box, tmp)
        log(f"box state saved in {time.monotonic() - started:.3f} s")
        _to_template_form(record.spec, tmp, log)
        meta = {"id": sid, "name": name or f"{record.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                "box": record.name, "created_at": time.time(), "spec": record.spec.to_json(),
                "image_digest": record.image_digest, "auto": auto,
                "backing": templates.used_by(box)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        (tmp / "making.lock").unlink()
        os.rename(tmp, root / sid)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if making is not None:
            making.close()
    snap = _load(root / sid)
    assert snap is not None
    return snap


def _save_full(box: BoxDir, dest: Path) -> None:
    """The box's whole state (RAM included) to dest/full and its disk to
    dest/disk.qcow2, taken while its vCPUs are stopped; then it runs on."""
    with qmp.session(box.qmp, box.qmp_lock, SAVE_TIMEOUT) as mon:
        running = (mon.execute("query-status") or {}).get("running", False)
        if running:
            mon.execute("stop")  # QEMU drains and flushes the disk on stop
        try:
            migration.save(mon, dest / "full", ignore_shared=False,
                           what="saving the box's state", timeout=SAVE_TIMEOUT)
            shutil.copyfile(box.disk, dest / "disk.qcow2")
        finally:
            if running:
                mon.execute("cont")  # also takes back the disk migration handed off


def _to_template_form(spec: BoxSpec, d: Path, log: vm.Log) -> None:
    """Load d/full into a VMM whose RAM is the file d/mem, save the rest to d/state."""
    conv = BoxDir(d / "vm")
    conv.path.mkdir(mode=0o700)
    held = conv.take_lock()
    assert held is not None
    vm.create_disk(d / "disk.qcow2", conv.disk, "qcow2")
    art = vm.artifacts(spec)
    choice = accel.choose(spec.accel, art.qemu, art.kernel)
    try:
        full = os.open(d / "full", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        held.close()
        raise
    try:
        with tap.scratch(spec.net) as tap_fd:
            running = vm.launch(conv, spec, held, attached=True, log=log, art=art,
                                choice=choice, memory=vm.Memory(d / "mem", shared=True),
                                incoming=True, inherit=(full,), tap_fd=tap_fd)
        try:
            with qmp.session(conv.qmp, conv.qmp_lock, SAVE_TIMEOUT) as mon:
                migration.load(mon, full, ignore_shared=False, what="loading the box's state",
                               timeout=SAVE_TIMEOUT)
                migration.save(mon, d / "state", ignore_shared=True,
                               what="saving the snapshot", timeout=SAVE_TIMEOUT)
                migration.quit(mon)
        finally:
            running.kill()
    finally:
        os.close(full)
    (d / "full").unlink()
    shutil.rmtree(conv.path)
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
        if PREFIX + d.name in referenced:
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
