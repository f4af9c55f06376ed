"""The event log: one JSON line per thing that happened to a box, appended by
the process that made it happen (there is no daemon to ask).

    <home>/events.log     {"time": 1767225600.123456, "type": "start", "box": ID,
                           "name": NAME, "image": IMAGE, "detail": {...}}
    <home>/events.log.1   the file before, once events.log passed ROTATE_AT
    <home>/events.lock    flock held for each append (and its rotation)

An append takes the lock, rotates a full file (rename to .1, replacing the
one before), and writes its line with one write() on an O_APPEND descriptor,
so lines from any number of processes stay whole and the log stays under
twice ROTATE_AT. A line is at most MAX_LINE bytes (a detail too long is
replaced by its size). Recording never fails the action: an unwritable log
loses the event, not the box.

A follower keeps its descriptor of the file it reads; when the path names a
new file (rotated), it reads the old one to its end, then the new from its
start. It polls every POLL_INTERVAL s: there is no daemon to wake it, and a
poll of one stat a quarter second costs nothing measurable.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from microbox import locks, paths
from microbox.errors import UsageError

if TYPE_CHECKING:
    from microbox.store.boxes import BoxRecord

ROTATE_AT = 4 * 1024 * 1024
MAX_LINE = 4000  # under PIPE_BUF (4096): one write() of it is whole even without the lock
POLL_INTERVAL = 0.25
TYPES = ("create", "start", "stop", "pause", "resume", "delete", "crash", "fork",
         "snapshot", "restore", "take", "commit")
FILTER_KEYS = ("box", "type", "image")


@dataclass(frozen=True)
class Event:
    """One line of the log. `box` is the box's id, `name` its name then."""

    time: float
    type: str
    box: str
    name: str
    image: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "type": self.type, "box": self.box, "name": self.name,
                "image": self.image, "detail": self.detail}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Event:
        detail = d.get("detail")
        return cls(time=float(d["time"]), type=str(d["type"]), box=str(d.get("box", "")),
                   name=str(d.get("name", "")), image=str(d.get("image", "")),
                   detail=dict(detail) if isinstance(detail, dict) else {})


def log_path() -> Path:
    return paths.home() / "events.log"


def _lock_path() -> Path:
    return paths.home() / "events.lock"


def _line(event: Event) -> bytes:
    line = json.dumps(event.to_json(), separators=(",", ":"), default=str).encode() + b"\n"
    if len(line) > MAX_LINE:
        cut = Event(event.time, event.type, event.box[:64], event.name[:64], event.image[:200],
                    {"detail_bytes": len(line)})
        line = json.dumps(cut.to_json(), separators=(",", ":")).encode() + b"\n"
    return line


def append(event: Event, *, rotate_at: int = ROTATE_AT) -> None:
    """Write one event; raises OSError if the log cannot be written."""
    path = log_path()
    line = _line(event)
    with locks.held(_lock_path()):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size + len(line) > rotate_at:
                os.replace(path, path.with_name(path.name + ".1"))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def record(type_: str, box: str, name: str, image: str, /, **detail: Any) -> None:
    """Append an event now; a log that cannot be written loses it silently."""
    with contextlib.suppress(OSError):
        append(Event(time.time(), type_, box, name, image, detail))


def of_box(type_: str, box: BoxRecord, /, **detail: Any) -> None:
    """Record an event of `box`; a pool's waiting box (the pool's business, not
    a user's) and a create not yet done (its start makes it, or removes it)
    have none."""
    if box.pool is None and not (box.pending and type_ == "delete"):
        record(type_, box.id, box.name, box.image, **detail)


# -- reading --------------------------------------------------------------------

Filters = Mapping[str, str | Sequence[str]]


def matcher(filters: Filters | None) -> Callable[[Event], bool]:
    """Docker's rule: values of one key are alternatives, different keys all
    apply. `box` matches a name, an id or an id prefix."""
    wanted: dict[str, set[str]] = {}
    for key, value in (filters or {}).items():
        if key not in FILTER_KEYS:
            raise UsageError(f"unknown event filter {key!r}; use one of "
                             f"{', '.join(FILTER_KEYS)} (KEY=VALUE)")
        values = {value} if isinstance(value, str) else set(value)
        wanted.setdefault(key, set()).update(values)

    def match(e: Event) -> bool:
        for key, values in wanted.items():
            if key == "box":
                if not any(v in (e.name, e.box) or (len(v) >= 4 and e.box.startswith(v))
                           for v in values):
                    return False
            elif getattr(e, key) not in values:
                return False
        return True

    return match


def parse_filters(items: Iterable[str]) -> dict[str, list[str]]:
    """`KEY=VALUE` strings (the CLI's and the API's --filter) as filters."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise UsageError(f"bad event filter {item!r}; write KEY=VALUE, e.g. box=web or "
                             "type=crash")
        out.setdefault(key.strip(), []).append(value.strip())
    matcher(out)  # unknown keys refused now
    return out


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float | None = None) -> float:
    """A time as Docker's --since takes it: UNIX seconds, an ISO 8601 date and
    time (local unless it names its zone), or a duration before now (10m, 1h30m)."""
    now = time.time() if now is None else now
    text = text.strip()
    with contextlib.suppress(ValueError):
        return float(text)
    if text and _DURATION.sub("", text) == "":
        return now - sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(text))
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise UsageError(f"bad time {text!r}; give UNIX seconds, an ISO 8601 time "
                         "(2026-01-02T15:04:05) or a duration before now (10m, 1h)") from None


def _parse(lines: Iterable[bytes]) -> Iterator[Event]:
    for raw in lines:
        try:
            yield Event.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError):
            continue  # not a line of ours: skipped, never fatal


def read(*, since: float | None = None, until: float | None = None,
         filters: Filters | None = None, follow: bool = False,
         stop: threading.Event | None = None,
         poll: float = POLL_INTERVAL) -> Iterator[Event]:
    """The events in the log, oldest first, then (follow) each new one as it
    is written, until `until` passes or `stop` is set."""
    match = matcher(filters)

    def wanted(e: Event) -> bool:
        return (since is None or e.time >= since) and match(e)

    path = log_path()
    old = path.with_name(path.name + ".1")
    with contextlib.suppress(OSError):
        for e in _parse(old.read_bytes().splitlines()):
            if until is not None and e.time > until:
                return
            if wanted(e):
                yield e
    tail = _Tail(path)
    try:
        while True:
            for e in _parse(tail.lines()):
                if until is not None and e.time > until:
                    return
                if wanted(e):
                    yield e
            if not follow or (stop is not None and stop.is_set()):
                return
            if until is not None and time.time() > until:
                return
            if stop is not None:
                if stop.wait(poll):
                    return
            else:
                time.sleep(poll)
    finally:
        tail.close()


class _Tail:
    """Complete lines of the file at `path` as they are appended, across renames."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f: Any = None
        self.ino: int | None = None
        self.partial = b""

    def _open(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.f = open(self.path, "rb")  # noqa: SIM115 (held across calls)
            self.ino = os.fstat(self.f.fileno()).st_ino

    def lines(self) -> list[bytes]:
        if self.f is None:
            self._open()
            if self.f is None:
                return []
        try:
            now: int | None = self.path.stat().st_ino
        except FileNotFoundError:
            now = None
        # Stat first: once the path names another file, nothing more is
        # written to ours, so it is read to its end before the switch.
        out = self._drain()
        if now != self.ino:
            self.close()
            self.partial = b""
            self._open()
            if self.f is not None:
                out += self._drain()
        return out

    def _drain(self) -> list[bytes]:
        data = self.partial + self.f.read()
        *whole, self.partial = data.split(b"\n")
        return [w for w in whole if w]

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
