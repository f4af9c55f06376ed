"""What a box costs, read where each figure lives, without a protocol change:

- CPU: the VMM's user + system time (/proc/PID/stat), as a share of one core
  between two readings (Docker's CPU %: 200 % is two cores busy);
- host memory: the VMM's Pss (/proc/PID/smaps_rollup), its pages shared with
  other boxes (a template's) counted in shares;
- guest memory and tasks: the guest's /proc/meminfo (MemTotal - MemAvailable)
  and /proc/loadavg's fourth field, read through the agent's file get
  (`parse_meminfo`, `parse_tasks`); the caller does the reading;
- network: the counters the shim's egress proxy rewrites (net-stats.json);
- disk: the blocks allocated to the box's overlay (disk.qcow2), which holds
  only what the box wrote over its image.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

from microbox.core.boxdir import BoxDir

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """The process's CPU time so far (user + system), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def cpu_percent(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Per cent of one core between two (monotonic time, cpu seconds) readings."""
    elapsed = after[0] - before[0]
    if elapsed <= 0:
        return 0.0
    return round(max(0.0, after[1] - before[1]) / elapsed * 100, 1)


def pss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def disk_used(d: BoxDir) -> int | None:
    """Bytes allocated to the box's overlay (sparse holes not counted)."""
    try:
        return d.disk.stat().st_blocks * 512
    except OSError:
        return None


@dataclass(frozen=True)
class NetCounters:
    rx_bytes: int
    tx_bytes: int
    connections: int
    refused: int


def net_counters(d: BoxDir) -> NetCounters | None:
    """The shim's proxy counters; None for a box whose proxy never ran."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        raw = json.loads(d.net_stats.read_bytes())
        return NetCounters(int(raw["rx_bytes"]), int(raw["tx_bytes"]),
                           int(raw["connections"]), int(raw["refused"]))
    return None


def parse_meminfo(text: bytes) -> tuple[int, int] | None:
    """(used, total) bytes of the guest's /proc/meminfo: used is what the
    guest could not give back without swapping (MemTotal - MemAvailable)."""
    values: dict[bytes, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(b":")
        with contextlib.suppress(ValueError, IndexError):
            values[key] = int(rest.split()[0]) * 1024
    if b"MemTotal" not in values or b"MemAvailable" not in values:
        return None
    return values[b"MemTotal"] - values[b"MemAvailable"], values[b"MemTotal"]


def parse_tasks(text: bytes) -> int | None:
    """The guest kernel's task count from /proc/loadavg ("0.00 0.01 0.05 1/83
    123"): every process and thread, the kernel's own threads among them, the
    figure Docker's PIDS column counts (threads too) for a container."""
    with contextlib.suppress(ValueError, IndexError):
        return int(text.split()[3].split(b"/")[1])
    return None
