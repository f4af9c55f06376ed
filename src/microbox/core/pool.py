"""Pools: spare boxes kept restored and run once, handed to `run` ready.

Under TCG every new QEMU translates afresh all the guest code it runs, so a
box restored from its template still spends ~0.2 s of its vCPU before its
first command ends (docs/snapshots.md). A pool keeps `size` spares of one
shape (image, cpus, memory, accelerator, kernel, network mode): boxes
restored from that shape's template that ran one command and wait with no
session and no shim, their VMMs detached. A `run` of that shape takes one
(`claim`): the agent takes the box's identity in its handshake and the shim
starts; a filler started in the background makes a new spare. Without a pool
nothing of this runs. docs/pool.md has the figures and the rules.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from microbox import locks, paths, portmap
from microbox.core import lifecycle, vm, warm
from microbox.core.boxdir import box_dir
from microbox.core.log import Log
from microbox.errors import InvalidSpec, MicroboxError, NotFound, UsageError, VMError
from microbox.images import builtin, filestore
from microbox.spec import BoxSpec, validate_name
from microbox.store import boxes, events, pools
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database
from microbox.store.pools import PoolRow
from microbox.vmm import process

NETS = ("user", "none")  # a --net tap box's network is made for its own id
MAX_SIZE = 64
LOG_LIMIT = 1 << 20  # bytes of the fillers' log (pools/<id>.log) kept before a new filler


@dataclass(frozen=True)
class Pool:
    id: str
    spec: BoxSpec  # the shape its spares have
    size: int  # how many spares it keeps
    ready: int  # how many a run would take now (alive, of the current template)
    created_at: float

    def to_json(self) -> dict[str, Any]:
        s = self.spec
        return {"id": self.id, "image": s.image, "cpus": s.cpus, "memory_mib": s.memory_mib,
                "accel": s.accel, "kernel": s.kernel, "net": s.net, "size": self.size,
                "ready": self.ready, "created_at": self.created_at}


def shape(spec: BoxSpec) -> BoxSpec:
    """What a spare is made of; the rest of a box's spec (its name, env, labels,
    ports, egress policy, trusted CAs) is given when a `run` takes it."""
    return BoxSpec(image=spec.image, cpus=spec.cpus, memory_mib=spec.memory_mib,
                   accel=spec.accel, kernel=spec.kernel, net=spec.net)


def id_of(spec: BoxSpec) -> str:
    """A pool's id: a hash of the shape its boxes have."""
    text = json.dumps(shape(spec).to_json(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def add(db: Database, spec: BoxSpec, size: int, log: Log) -> Pool:
    """Keep `size` spares of `spec`'s shape (a pool of that shape gets the new
    size), made now; returns the pool."""
    spec = shape(spec.validate())
    if spec.net not in NETS:
        raise InvalidSpec(f"a pool cannot hold --net {spec.net} boxes: use --net user or none")
    if not 1 <= size <= MAX_SIZE:
        raise InvalidSpec(f"a pool's size must be between 1 and {MAX_SIZE}, not {size}")
    # a missing image fails here, before any row; a pool names it as runs do
    spec = replace(spec, image=builtin.ensure(db, spec.image).name)
    pools.put(db, PoolRow(id_of(spec), spec, size))
    fill(db, id_of(spec), log)
    return get(db, id_of(spec))


def fill(db: Database, pool_id: str, log: Log) -> None:
    """Bring the pool to its size: spares whose VMM died or whose template is
    no longer the shape's (a rebuilt agent, say) are removed, missing ones
    made, extra ones removed. One filler at a time works on a pool, under its
    lock; one that finds the pool removed stops.

    A run that takes a spare while a filler holds the lock starts no filler of
    its own (`refill`), so a filler looks again once it has let the lock go:
    a take it did not see has committed by then."""
    while True:
        with locks.held(_lock_path(pool_id)):
            while True:
                row = pools.get(db, pool_id)
                if row is None:
                    return
                image = builtin.ensure(db, row.spec.image)
                key, _ = warm.template_key(row.spec, image.digest)
                current: list[BoxRecord] = []
                for spare in _running(db, pool_id):
                    if spare.spare_key == key and len(current) < row.size:
                        current.append(spare)
                    else:
                        _retire(db, spare)
                if len(current) >= row.size:
                    break
                _make_spare(db, row, key, log)
        row = pools.get(db, pool_id)
        if row is None or _pool(db, row).ready >= row.size:
            return


def _make_spare(db: Database, row: PoolRow, key: str, log: Log) -> None:
    with filestore.using():
        record, lock = lifecycle.create(db, row.spec, name=f"spare-{secrets.token_hex(4)}",
                                        auto_remove=True, start_next=True)
    record = record.with_(pool=row.id, spare_key=key)
    try:
        boxes.update(db, record)  # the pool's from the start: hidden from ls -a
    except BaseException:
        lock.close()
        lifecycle.destroy(db, record)
        raise
    spare = lifecycle.start_spare(db, record, lock, log=log)
    log(f"pool {row.id}: spare {spare.id[:12]} ready")


def _running(db: Database, pool_id: str) -> list[BoxRecord]:
    """The pool's spares whose VMM lives; dead ones are removed."""
    alive = []
    for spare in boxes.spares(db, pool=pool_id):
        if box_dir(spare).alive():
            alive.append(spare)
        else:
            _retire(db, spare)
    return alive


def _retire(db: Database, spare: BoxRecord) -> None:
    """Remove a spare, unless a `run` took it first (then it is that run's box)."""
    mine = spare.with_(pending=True, **lifecycle.starter())
    if boxes.take_spare(db, spare, mine):
        lifecycle.destroy(db, mine)


def _lock_path(pool_id: str) -> Path:
    d = paths.pools_dir()
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{pool_id}.lock"


def listing(db: Database) -> list[Pool]:
    return [_pool(db, row) for row in pools.all_pools(db)]


def _pool(db: Database, row: PoolRow) -> Pool:
    """The pool, with the count of its boxes a run would take now: alive, and
    made for the template its shape restores from now."""
    key = None
    image = filestore.find(db, row.spec.image)
    with contextlib.suppress(MicroboxError):  # no kernel, say: no box is current
        key = warm.template_key(row.spec, image.digest)[0] if image else None
    ready = sum(1 for s in boxes.spares(db, pool=row.id)
                if s.spare_key == key and box_dir(s).alive())
    return Pool(row.id, row.spec, row.size, ready, row.created_at)


def get(db: Database, ref: str) -> Pool:
    """A pool by id, unique id prefix, or the name of its image if one pool has it."""
    rows = pools.all_pools(db)
    found = [r for r in rows if r.id == ref] or [r for r in rows if r.id.startswith(ref)] \
        or [r for r in rows if r.spec.image == ref]
    if not found:
        raise NotFound(f"no pool {ref!r}", "microbox pool ls")
    if len(found) > 1:
        ids = ", ".join(r.id for r in found)
        raise UsageError(f"{ref!r} names {len(found)} pools ({ids}); give a pool's id")
    return _pool(db, found[0])


def remove(db: Database, ref: str) -> Pool:
    """Remove a pool and its spares (a box already taken from it is the user's)."""
    pool = get(db, ref)
    pools.delete(db, pool.id)  # a filler at work stops after its current spare
    with locks.held(_lock_path(pool.id)):
        for spare in boxes.spares(db, pool=pool.id):
            _retire(db, spare)
    return pool


def claim(db: Database, spec: BoxSpec, *, name: str | None, auto_remove: bool,
          attached: bool, log: Log) -> lifecycle.Started | None:
    """A running box of `spec` made from a pool's spare, or None when no spare
    fits (the caller starts a box as usual). A spare that fails on the way is
    removed and None returned, with a line in the log."""
    if spec.cold or spec.mounts or spec.net not in NETS:  # spares have no mount devices
        return None
    image = filestore.find(db, spec.image) if boxes.any_spare(db) else None
    key, accel = warm.template_key(spec, image.digest) if image else ("", "")
    candidates = boxes.spares(db, key=key) if image else []
    if not candidates:
        # A pool of this shape has nothing to give: its filler died (or failed)
        # before the pool was full, or its boxes were made for another template
        # (the agent, kernel, QEMU or image changed since). It fills anew.
        if pools.get(db, id_of(spec)) is not None:
            _refill_quietly(id_of(spec), log)
        return None
    assert image is not None
    if name is not None:
        validate_name(name)
    published = portmap.bind(spec.ports)  # a taken port fails as a box's start would
    short: set[str] = set()  # pools to refill: one lost a box here
    try:
        for spare in candidates:
            if spare.pool is not None:
                short.add(spare.pool)
            if (spare.pid is None or not box_dir(spare).alive()
                    or not process.same_process(spare.pid, spare.pid_start)):
                continue  # dead: the pool's filler removes it
            claimed = spare.with_(
                name=name or f"box-{secrets.token_hex(4)}", image=image.name, spec=spec,
                image_digest=image.digest, auto_remove=auto_remove, pool=None,
                spare_key=None, pending=True, created_at=time.time(), **lifecycle.starter())
            if not boxes.take_spare(db, spare, claimed):
                continue  # another command took it first
            vmm = vm.Running(spare.pid, spare.pid_start, accel, spawned_at=time.monotonic())
            try:
                taken = lifecycle.adopt(db, claimed, vmm, published, attached=attached, log=log)
                log(f"took the spare {spare.id[:12]} of pool {spare.pool}")
                events.of_box("take", taken.record, pool=spare.pool)
                return taken
            except VMError as exc:
                log(f"the pool's box {spare.id[:12]} failed ({exc.message}); starting one anew")
                return None
        return None
    finally:
        for sock in published:
            sock.close()  # the shim holds its own copies
        for pool_id in short:
            _refill_quietly(pool_id, log)


def _refill_quietly(pool_id: str, log: Log) -> None:
    try:
        refill(pool_id)
    except OSError as exc:  # a run goes on without it
        log(f"cannot start pool {pool_id}'s filler: {exc}")


def refill(pool_id: str) -> None:
    """Start a filler for the pool in the background, unless one is at work
    (`fill` then sees what this process took): it outlives this process and
    ends when the pool is full (or gone)."""
    if locks.is_held(_lock_path(pool_id)):
        return
    with open(_lock_path(pool_id).with_suffix(".log"), "ab") as out:
        if os.fstat(out.fileno()).st_size > LOG_LIMIT:
            out.truncate(0)  # the fillers' log keeps their recent runs only
        subprocess.Popen(
            [sys.executable, "-c", "from microbox.core import pool; pool.main()", pool_id],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)


def main() -> None:
    """The background filler: `python -c '...pool.main()' POOL_ID`."""
    pool_id = sys.argv[1]

    def log(message: str) -> None:
        print(time.strftime("%Y-%m-%dT%H:%M:%S"), message, flush=True)

    try:
        fill(Database(paths.database()), pool_id, log)
    except Exception as exc:  # the log is the only one to tell
        log(f"pool {pool_id}: filling failed: {exc}")
        sys.exit(1)
