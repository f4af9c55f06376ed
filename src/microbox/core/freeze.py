"""A box's vCPUs stopped on a command's behalf (snapshot, fork), and the repair
when that command dies before it lets them run again.

Saving a running box stops its vCPUs, streams its state to a file and runs it
on (`cont`). A command SIGKILLed in between left the box stopped, or its state
still migrating to a file nobody would read, while its status said `running`:
`exec` hung, `resume` refused ("not paused"), the next snapshot failed.

So the saver writes `<box>/frozen` before `stop` and removes it after `cont`,
holding the box's QMP lock the whole time. `frozen` with the QMP lock free
means its writer died in between; reconcile, which every command runs on the
box it acts on, then repairs the box: it cancels a migration still under way,
waits out `finish-migrate`, and lets a box whose status is `running` run
again. A paused box stays paused (QEMU's `postmigrate` is paused too, and
`resume` leaves it). The check on a healthy box is one stat.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from microbox import locks
from microbox.core.boxdir import BoxDir
from microbox.errors import VMError
from microbox.store.status import Status
from microbox.vmm import migration, qmp
from microbox.vmm.qmp import Monitor

REPAIR_TIMEOUT = 10.0


@contextmanager
def stopped(box: BoxDir, mon: Monitor) -> Iterator[bool]:
    """Stop the box's vCPUs for the block (the caller holds the QMP lock through
    `mon`); yields whether they were running, and lets them run again after,
    whatever the block raised. `frozen` marks the time between for `repair`."""
    running = bool((mon.execute("query-status") or {}).get("running", False))
    if not running:
        yield False
        return
    box.frozen.write_text(f"{os.getpid()}\n")
    mon.execute("stop")  # QEMU drains and flushes the disk on stop
    try:
        yield True
    finally:
        migration.settle(mon, "letting the box run on", time.monotonic() + REPAIR_TIMEOUT)
        mon.execute("cont")  # also takes back the disk a migration handed off
        box.frozen.unlink(missing_ok=True)


def repair(box: BoxDir, status: Status) -> None:
    """Undo the stop of a saver that died, for a live box whose status is
    `status`; a no-op (one stat) unless `frozen` was left behind."""
    if not box.frozen.exists():
        return
    lock = locks.try_acquire(box.qmp_lock)
    if lock is None:  # a saver at work (or any QMP client): not ours to judge now
        return
    with lock, contextlib.suppress(VMError, OSError):
        if not box.frozen.exists():  # repaired meanwhile by another command
            return
        mon = Monitor.connect(box.qmp, qmp.TIMEOUT)
        try:
            deadline = time.monotonic() + REPAIR_TIMEOUT
            if (mon.execute("query-migrate") or {}).get("status") in migration.MIGRATING:
                mon.execute("migrate_cancel")
            migration.settle(mon, "repairing the box", deadline)
            state = mon.execute("query-status") or {}
            if status == Status.RUNNING and not state.get("running", False):
                mon.execute("cont")
        finally:
            mon.close()
        box.frozen.unlink(missing_ok=True)
