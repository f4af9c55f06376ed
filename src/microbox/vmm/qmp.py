"""QMP, for what only the VMM can do: pause and resume (`stop`, `cont`), and
saving and loading a migration stream (templates, snapshots).

A small synchronous client: QMP is one JSON object a line over the socket
(greeting, `qmp_capabilities`, then commands answered in order, with events in
between). The qemu.qmp library was used before; its import alone costs 20-55 ms
here (asyncio), which is a quarter of a warm start's budget (docs/snapshots.md).

QEMU serves one QMP client at a time on the socket; a second connect() would
succeed at the kernel level and then wait. Clients therefore take an exclusive
flock on `qmp.lock` in the box dir first.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from microbox import locks
from microbox.errors import VMError

TIMEOUT = 10.0
_LINE_MAX = 1 << 20  # a QMP line longer than this is not from a sane VMM


class Monitor:
    """One negotiated QMP connection."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self._buf = b""
        self._ids = 0
        self._deadline_default = timeout
        self.events: list[dict[str, Any]] = []

    @classmethod
    def connect(cls, path: Path, timeout: float = TIMEOUT) -> Monitor:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            mon = cls(sock, timeout)
            deadline = time.monotonic() + timeout
            greeting = mon._read(deadline)
            if "QMP" not in greeting:
                raise VMError("the VMM's monitor did not greet in QMP")
            mon.execute("qmp_capabilities")
        except OSError as exc:
            sock.close()
            raise VMError(f"QMP to the box's VMM failed: {exc}") from None
        except BaseException:
            sock.close()
            raise
        return mon

    def close(self) -> None:
        self._sock.close()

    def send(self, name: str, **args: Any) -> int:
        """Send a command without waiting; returns its id (see `reply`)."""
        self._ids += 1
        msg: dict[str, Any] = {"execute": name, "id": self._ids}
        if args:
            msg["arguments"] = args
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as exc:
            raise VMError(f"QMP {name} failed: {exc}") from None
        return self._ids

    def pass_fd(self, fdname: str, fd: int) -> None:
        """Hand QEMU an open file (SCM_RIGHTS with `getfd`), for `fd:NAME` URIs."""
        self._ids += 1
        msg = {"execute": "getfd", "arguments": {"fdname": fdname}, "id": self._ids}
        try:
            socket.send_fds(self._sock, [json.dumps(msg).encode() + b"\n"], [fd])
        except OSError as exc:
            raise VMError(f"QMP getfd failed: {exc}") from None
        self.reply("getfd", self._ids)

    def reply(self, name: str, cid: int, timeout: float | None = None) -> Any:
        """The return value of command `cid`; VMError if QEMU refused it."""
        deadline = time.monotonic() + (timeout or self._deadline_default)
        while True:
            msg = self._read(deadline)
            if "event" in msg:
                self.events.append(msg)
                continue
            if msg.get("id") != cid:
                continue
            if "error" in msg:
                err = msg["error"]
                desc = err.get("desc", err) if isinstance(err, dict) else err
                raise VMError(f"QMP {name} failed: {desc}")
            return msg.get("return")

    def execute(self, name: str, timeout: float | None = None, **args: Any) -> Any:
        return self.reply(name, self.send(name, **args), timeout)

    def wait_event(self, name: str, match: Callable[[dict[str, Any]], bool],
                   timeout: float) -> dict[str, Any]:
        """The first event `name` whose data satisfies `match` (seen before or now)."""
        deadline = time.monotonic() + timeout
        while True:
            for n, ev in enumerate(self.events):
                if ev.get("event") == name and match(ev.get("data") or {}):
                    del self.events[: n + 1]
                    return ev
            self.events.clear()
            msg = self._read(deadline)
            if "event" in msg:
                self.events.append(msg)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise VMError("the box's VMM did not answer on QMP in time")
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise VMError(f"QMP to the box's VMM failed: {exc}") from None
            if not data:
                raise VMError("the box's VMM closed its QMP connection")
            self._buf += data
            if len(self._buf) > _LINE_MAX:
                raise VMError("the box's VMM sent an oversized QMP message")
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            msg = json.loads(line)
        except ValueError:
            raise VMError("the box's VMM sent malformed QMP") from None
        if not isinstance(msg, dict):
            raise VMError("the box's VMM sent malformed QMP")
        return msg


@contextmanager
def session(sock: Path, lock: Path, timeout: float = TIMEOUT) -> Iterator[Monitor]:
    """A negotiated QMP connection, under the box's QMP lock."""
    with locks.held(lock):  # short critical sections only; waits are brief
        mon = Monitor.connect(sock, timeout)
        try:
            yield mon
        finally:
            mon.close()


def command(sock: Path, lock: Path, name: str, **args: Any) -> Any:
    with session(sock, lock) as mon:
        return mon.execute(name, **args)
