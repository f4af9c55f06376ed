"""QEMU migration streams to and from files, over QMP: how templates and
snapshots are saved and loaded (docs/snapshots.md).

QEMU is always handed an open file (`fd:`), never a shell command: saving passes
it over QMP (`getfd`), loading passes the fd QEMU inherited at spawn. With
`ignore_shared`, RAM in a shared memory-backend-file stays out of the stream.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from microbox import failpoints
from microbox.errors import VMError
from microbox.vmm.qmp import Monitor

_ENDED = ("completed", "failed", "cancelled")
UNPACED = 1 << 40  # bytes/s


def _capabilities(mon: Monitor, ignore_shared: bool) -> None:
    mon.execute("migrate-set-capabilities", capabilities=[
        {"capability": "x-ignore-shared", "state": ignore_shared},
        {"capability": "events", "state": True}])


def _wait(mon: Monitor, what: str, timeout: float) -> None:
    ev = mon.wait_event("MIGRATION", lambda data: data.get("status") in _ENDED, timeout)
    status = (ev.get("data") or {}).get("status")
    if status != "completed":
        raise VMError(f"{what} failed (migration {status})")


def save(mon: Monitor, path: Path, *, ignore_shared: bool, what: str, timeout: float) -> None:
    """Write the (stopped) VM's state into a new file at `path` and wait for it."""
    _capabilities(mon, ignore_shared)
    # QEMU paces a migration to 128 MiB/s by default, for a guest that runs on
    # while it moves; this one is stopped and only waits for the file.
    mon.execute("migrate-set-parameters", **{"max-bandwidth": UNPACED})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        mon.pass_fd("microbox-out", fd)
    finally:
        os.close(fd)
    mon.execute("migrate", uri="fd:microbox-out")
    failpoints.reach("migration-started")
    deadline = time.monotonic() + timeout
    _wait(mon, what, timeout)
    settle(mon, what, deadline)


# The states in which a migration is still writing its stream.
MIGRATING = ("setup", "active", "pre-switchover", "device", "wait-unplug", "cancelling")


def settle(mon: Monitor, what: str, deadline: float) -> None:
    """Wait until no migration is under way and QEMU has finished with the saved
    VM. Its migration thread sends the MIGRATION `completed` event, and only
    after that moves the run state from finish-migrate to postmigrate under the
    big lock (QEMU 7.2 migration.c: migration_completion, then
    migration_iteration_finish); a `cont` in between fails with "Migration is
    not finalized yet" (seen once in `make test`). No event marks the move, so
    the state is read until it is made; the window is the migration thread's
    next few instructions. A cancelled migration passes through `cancelling`."""
    while ((mon.execute("query-migrate") or {}).get("status") in MIGRATING
           or (mon.execute("query-status") or {}).get("status") == "finish-migrate"):
        if time.monotonic() > deadline:
            raise VMError(f"{what} failed (QEMU did not finish the migration in time)")
        time.sleep(0.001)


def load(mon: Monitor, fd: int, *, ignore_shared: bool, what: str, timeout: float) -> None:
    """Load a state into a VMM started with `-incoming defer` that inherited the
    open file as `fd`, and wait for it. The guest stays stopped."""
    _capabilities(mon, ignore_shared)
    mon.execute("migrate-incoming", uri=f"fd:{fd}")
    _wait(mon, what, timeout)


def quit(mon: Monitor) -> None:
    """End the VMM; it may close the connection before it answers."""
    with contextlib.suppress(VMError):
        mon.execute("quit")
