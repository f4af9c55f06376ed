"""How boxes look: JSON objects and rich tables."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from microbox.store.boxes import BoxRecord


def record_json(r: BoxRecord) -> dict[str, Any]:
    return {
        "id": r.id, "name": r.name, "image": r.image, "status": r.status,
        "cpus": r.spec.get("cpus"), "memory_mib": r.spec.get("memory_mib"),
        "auto_remove": r.auto_remove, "created_at": r.created_at, "started_at": r.started_at,
        "finished_at": r.finished_at, "pid": r.pid, "last_error": r.last_error,
        "spec": r.spec,
    }


def ago(t: float | None) -> str:
    if t is None:
        return "-"
    s = max(0, int(time.time() - t))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit} ago"
    return f"{s}s ago"


def console() -> Console:
    """Rich console; off a terminal, wide enough that tables do not wrap."""
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def boxes_table(records: list[BoxRecord]) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("ID", "NAME", "IMAGE", "STATUS", "CPUS", "MEMORY", "CREATED"):
        table.add_column(col)
    for r in records:
        status = r.status if r.status != "error" else "[red]error[/red]"
        table.add_row(r.id[:12], r.name, r.image, status, str(r.spec.get("cpus", "")),
                      f"{r.spec.get('memory_mib', '')}M", ago(r.created_at))
    console().print(table)
