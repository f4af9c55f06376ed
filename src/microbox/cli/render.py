"""How boxes look: JSON objects and rich tables."""

from __future__ import annotations

import sys
import time

from microbox.sdk import Box, Status


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


def boxes_table(boxes: list[Box]) -> None:
    print_table(
        ["ID", "NAME", "IMAGE", "STATUS", "CPUS", "MEMORY", "CREATED"],
        [[b.id[:12], b.name, b.record.image,
          b.status if b.status != Status.ERROR else "[red]error[/red]",
          str(b.spec.cpus), f"{b.spec.memory_mib}M", ago(b.record.created_at)]
         for b in boxes])

