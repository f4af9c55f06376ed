"""What boxes cost, for `microbox stats`, `box.stats()`, the API and /metrics:
one typed record per box per reading (core/stats.py says where each figure
comes from). CPU % needs two readings, so a `Sampler` keeps each box's last
one; `box.stats(interval)` takes both itself.
"""

from __future__ import annotations

import builtins
import dataclasses
import io
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

from microbox.core import stats as costs
from microbox.core.boxdir import box_dir
from microbox.errors import MicroboxError, NotFound
from microbox.store.boxes import BoxRecord
from microbox.store.status import Status
from microbox.vmm import process


class Box(Protocol):
    """What a reading needs of a box handle (sdk/box.py's Box, which imports this)."""

    record: BoxRecord

    @property
    def id(self) -> str: ...
    def reload(self) -> Any: ...
    def release(self) -> None: ...
    def net_info(self) -> dict[str, Any]: ...
    def get(self, remote: str, local: IO[bytes], max_bytes: int | None = None) -> int: ...


class Boxes(Protocol):
    """What `watch` needs of rt.boxes."""

    def get(self, ref: str) -> Any: ...
    def list(self) -> builtins.list[Any]: ...

GUEST_FILE_LIMIT = 64 * 1024  # /proc/meminfo is ~1.5 KB


@dataclass(frozen=True)
class BoxStats:
    """One reading of one box. A figure that cannot be had is None: every
    live one of a box that is not running, the guest's of a paused box (its
    vCPUs are stopped), the network's of a box without the user-mode proxy
    (--net none, tap: its firewall's refusals only), CPU % of a first reading."""

    id: str
    name: str
    image: str
    status: str
    time: float
    cpus: int
    cpu_percent: float | None  # of one core, over the interval (Docker's CPU %)
    cpu_seconds: float | None  # the VMM's CPU time so far (user + system)
    memory_used: int | None  # bytes the guest uses (MemTotal - MemAvailable)
    memory_total: int | None  # bytes the guest kernel has
    host_pss: int | None  # the VMM's proportional share of host memory, bytes
    net_rx: int | None  # bytes the box received through its egress proxy
    net_tx: int | None  # bytes it sent
    net_connections: int | None  # connections its proxy served
    net_refused: int | None  # connections refused by its policy
    disk_used: int | None  # bytes allocated to its disk overlay (what it wrote)
    pids: int | None  # guest tasks: processes and threads, kernel ones too

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Sampler:
    """Readings of boxes; each box's CPU % is over the time since this
    sampler's last reading of it (None the first time). Safe from threads."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def prime(self, box: Box) -> None:
        """Take the CPU reading a later `sample` measures from."""
        self._cpu(box)

    def _cpu(self, box: Box) -> tuple[float | None, float | None]:
        """(CPU % since the last reading, CPU seconds so far) of the box's VMM."""
        r = box.record
        if r.status not in (Status.RUNNING, Status.PAUSED) or r.pid is None:
            return None, None
        if not process.same_process(r.pid, r.pid_start):
            return None, None
        used = costs.cpu_seconds(r.pid)
        if used is None:
            return None, None
        now = (time.monotonic(), used)
        with self._lock:
            before = self._last.get(r.id)
            self._last[r.id] = now
        return None if before is None else costs.cpu_percent(before, now), used

    def sample(self, box: Box) -> BoxStats:
        r = box.record
        d = box_dir(r)
        cpu, used = self._cpu(box)
        live = used is not None
        memory = tasks = None
        if r.status == Status.RUNNING:
            memory, tasks = _guest(box)
        net = costs.net_counters(d) if r.spec.net == "user" else None
        refused = net.refused if net is not None else None
        if r.spec.net == "tap":
            refused = box.net_info().get("refused")
        return BoxStats(
            id=r.id, name=r.name, image=r.image, status=str(r.status), time=time.time(),
            cpus=r.spec.cpus, cpu_percent=cpu, cpu_seconds=used,
            memory_used=memory[0] if memory else None,
            memory_total=memory[1] if memory else None,
            host_pss=costs.pss_bytes(r.pid) if live and r.pid is not None else None,
            net_rx=net.rx_bytes if net else None, net_tx=net.tx_bytes if net else None,
            net_connections=net.connections if net else None, net_refused=refused,
            disk_used=costs.disk_used(d), pids=tasks)


def _read(box: Box, path: str) -> bytes | None:
    buf = io.BytesIO()
    try:
        box.get(path, buf, max_bytes=GUEST_FILE_LIMIT)
    except MicroboxError:
        return None
    return buf.getvalue()


def _guest(box: Box) -> tuple[tuple[int, int] | None, int | None]:
    """The guest's memory (used, total) and task count, through its agent."""
    meminfo = _read(box, "/proc/meminfo")
    loadavg = _read(box, "/proc/loadavg")
    return (costs.parse_meminfo(meminfo) if meminfo is not None else None,
            costs.parse_tasks(loadavg) if loadavg is not None else None)


def of_box(box: Box, interval: float) -> BoxStats:
    """One reading of `box`, its CPU % over `interval` seconds."""
    sampler = Sampler()
    sampler.prime(box)
    time.sleep(max(0.0, interval))
    box.reload()
    return sampler.sample(box)


def watch(boxes: Boxes, refs: Sequence[str], *, interval: float, stream: bool,
          stop: threading.Event | None) -> Iterator[builtins.list[BoxStats]]:
    """A reading of each box every `interval` s (once without `stream`): of
    `refs`, or of every running and paused box (those that come and go too).
    A named box removed meanwhile leaves the readings; each box's handle (and
    its agent session) is kept from one reading to the next."""
    sampler = Sampler()
    stop = stop or threading.Event()
    handles: dict[str, Box] = {}
    first = True
    try:
        while True:
            found = _find(boxes, refs, must=first)
            first = False
            for b in found:
                if b.id not in handles:
                    handles[b.id] = b
                    sampler.prime(b)
            if stop.wait(interval):
                return
            readings = []
            for b in found:
                box = handles[b.id]
                box.record = b.record
                readings.append(sampler.sample(box))
            yield readings
            if not stream:
                return
    finally:
        for box in handles.values():
            box.release()


def _find(boxes: Boxes, refs: Sequence[str], *, must: bool) -> builtins.list[Box]:
    if not refs:
        return [b for b in boxes.list() if b.record.status in (Status.RUNNING, Status.PAUSED)]
    found = []
    for ref in refs:
        try:
            found.append(boxes.get(ref))
        except NotFound:
            if must:
                raise
    return found
