"""Fork: running clones of a running box, through a snapshot of it (removed
by gc once the clones are gone). All or none: the clones' rows are written
together once each has started; if one fails, the others are torn down, and
if the forking process dies first, reconcile removes what it made."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

from microbox import failpoints
from microbox.core import lifecycle, snapshots
from microbox.core.log import Log
from microbox.store import boxes, events
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database

PARALLEL = 4  # restores at once: QEMU's start-up is CPU-bound


def clones(db: Database, record: BoxRecord, names: list[str], *, rm: bool, attached: bool,
           log: Log) -> list[lifecycle.Started]:
    """Start one clone of the running box `record` per name (names checked free
    by the caller)."""
    snap = snapshots.create(record, auto=True, log=log)
    made: list[lifecycle.Started] = []
    try:
        with ThreadPoolExecutor(min(len(names), PARALLEL)) as pool:
            futures = [pool.submit(snapshots.start_box, db, snap, name=name, auto_remove=rm,
                                   attached=attached, log=log, commit=False)
                       for name in names]
            for f in futures:
                with contextlib.suppress(Exception):
                    made.append(f.result())
            for f in futures:
                f.result()  # the first failure, after every restore ended
        failpoints.reach("fork-started")
        boxes.update(db, *(s.record for s in made))
        for s in made:
            events.of_box("fork", s.record, source=record.name, source_id=record.id)
    except BaseException:
        for started in made:
            started.channel.close()
            lifecycle.destroy(db, started.record, started.vm)
        raise
    return made
