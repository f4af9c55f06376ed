"""How boxes look: JSON objects and rich tables."""

from __future__ import annotations

import sys
import time
from typing import Any

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


def print_table(columns: list[str], rows: list[list[str]]) -> None:
    """A borderless rich table on stdout; off a terminal, wide enough not to wrap.
    rich is imported here, not at start-up: most commands never draw a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200).print(table)


def boxes_table(records: list[BoxRecord]) -> None:
    print_table(
        ["ID", "NAME", "IMAGE", "STATUS", "CPUS", "MEMORY", "CREATED"],
        [[r.id[:12], r.name, r.image, r.status if r.status != "error" else "[red]error[/red]",
          str(r.spec.get("cpus", "")), f"{r.spec.get('memory_mib', '')}M", ago(r.created_at)]
         for r in records])
