"""QMP, through the qemu.qmp library, for what only the VMM can do (pause and
resume: `stop` and `cont`).

QEMU serves one QMP client at a time on the socket; a second connect() would
succeed at the kernel level and then wait. Clients therefore take an exclusive
flock on `qmp.lock` in the box dir first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from microbox import locks
from microbox.errors import VMError

TIMEOUT = 10.0


@contextmanager
def session(sock: Path, lock: Path, timeout: float = TIMEOUT) -> Iterator[Any]:
    """A negotiated QMP connection (qemu.qmp.legacy.QEMUMonitorProtocol)."""
    from qemu.qmp import legacy  # imported lazily: asyncio is heavy for short commands

    with locks.held(lock):  # short critical sections only; waits are brief
        qmp = legacy.QEMUMonitorProtocol(str(sock))
        try:
            qmp.settimeout(timeout)
            qmp.connect()
            yield qmp
        except Exception as exc:  # qemu.qmp raises its own and OSError types
            raise VMError(f"QMP to the box's VMM failed: {exc}") from None
        finally:
            qmp.close()


def command(sock: Path, lock: Path, name: str, **args: Any) -> Any:
    with session(sock, lock) as qmp:
        reply = qmp.cmd_raw(name, args or None)
    if "error" in reply:
        raise VMError(f"QMP {name} failed: {reply['error'].get('desc', reply['error'])}")
    return reply.get("return")
