"""Saving a VM's state over QMP (vmm/migration.py) against a QMP peer on a
socketpair that plays QEMU 7.2's order of events. The real-VM tests
(test_snapshot, test_warm) save real boxes; this one pins the one ordering a
real QEMU shows only now and then."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

from microbox.vmm import migration
from microbox.vmm.qmp import Monitor


def _peer(sock: socket.socket, states: list[str], log: list[str]) -> None:
    """Answer each command; after `migrate`, send the MIGRATION `completed`
    event at once while the run state is still finish-migrate for the first
    query-status answers (`states`), as QEMU's migration thread does."""
    buf = b""
    while True:
        while b"\n" not in buf:
            data, _, _, _ = socket.recv_fds(sock, 65536, 4)
            if not data:
                return
            buf += data
        line, _, buf = buf.partition(b"\n")
        msg: dict[str, Any] = json.loads(line)
        name = msg["execute"]
        log.append(name)
        out: list[dict[str, Any]] = []
        if name == "query-status":
            out.append({"return": {"status": states.pop(0) if states else "postmigrate",
                                   "running": False}, "id": msg["id"]})
        else:
            out.append({"return": {}, "id": msg["id"]})
        if name == "migrate":
            out.append({"event": "MIGRATION", "data": {"status": "completed"}})
        sock.sendall(b"".join(json.dumps(m).encode() + b"\n" for m in out))


def test_a_save_returns_once_qemu_has_left_finish_migrate(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair()
    log: list[str] = []
    peer = threading.Thread(target=_peer, args=(theirs, ["finish-migrate"] * 3, log))
    peer.start()
    try:
        mon = Monitor(ours, 5.0)
        migration.save(mon, tmp_path / "state", ignore_shared=False, what="saving",
                       timeout=5.0)
        # the `cont` a snapshot sends next would have failed on any of the first three
        after = log[log.index("migrate") + 1:]
        assert [n for n in after if n == "query-status"] == ["query-status"] * 4
        assert after[-1] == "query-status"
        assert mon.execute("query-status")["status"] == "postmigrate"
    finally:
        ours.close()
        peer.join(5)
        theirs.close()
