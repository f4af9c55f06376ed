"""`microbox stats` and `microbox events`: what boxes cost and what happened to them."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

import click

from microbox.cli.common import common_options, guarded
from microbox.cli.output import Out
from microbox.sdk import BoxStats, Event, Runtime

COLUMNS = ("BOX ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "HOST PSS",
           "NET I/O", "REFUSED", "DISK", "PIDS")


def _size(n: int | None) -> str:
    if n is None:
        return "--"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"


def row(s: BoxStats) -> list[str]:
    """One box's line of the table, Docker's columns where they apply."""
    mem_pct = (f"{s.memory_used / s.memory_total * 100:.1f}%"
               if s.memory_used is not None and s.memory_total else "--")
    net = "--" if s.net_rx is None else f"{_size(s.net_rx)} / {_size(s.net_tx)}"
    return [s.id[:12], s.name, "--" if s.cpu_percent is None else f"{s.cpu_percent:.1f}%",
            f"{_size(s.memory_used)} / {_size(s.memory_total)}", mem_pct, _size(s.host_pss),
            net, "--" if s.net_refused is None else str(s.net_refused), _size(s.disk_used),
            "--" if s.pids is None else str(s.pids)]


def _table(readings: Sequence[BoxStats]) -> object:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for c in COLUMNS:
        table.add_column(c, no_wrap=True)
    for s in readings:
        table.add_row(*row(s))
    return table


@click.command()
@click.option("--no-stream", is_flag=True, help="Print one reading and exit.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between readings (and CPU %'s window).")
@common_options
@click.argument("boxes", nargs=-1)
def stats(no_stream: bool, interval: float, as_json: bool, verbose: bool,
          boxes: tuple[str, ...]) -> None:
    """What boxes cost: CPU, memory, network, disk and tasks (default: every
    running box). A live table on a terminal; else one JSON line per box per
    reading (--no-stream --json: one envelope)."""
    out = Out("stats", as_json, verbose)
    lines = as_json or not sys.stdout.isatty()

    def body() -> int:
        with Runtime(log=out.log) as rt:
            readings = rt.boxes.watch_stats(boxes, interval=interval, stream=not no_stream)
            if no_stream:
                got = next(iter(readings), [])
                if as_json:
                    out.result([s.to_json() for s in got])
                else:
                    from rich.console import Console

                    # a pipe gets whole columns, not a table cut to 80 characters
                    Console(width=None if sys.stdout.isatty() else 200).print(_table(got))
                return 0
            if lines:
                for got in readings:
                    for s in got:
                        click.echo(json.dumps(s.to_json()))
                    sys.stdout.flush()
                return 0
            from rich.live import Live

            with Live(_table([]), auto_refresh=False) as live:  # type: ignore[arg-type]
                for got in readings:
                    live.update(_table(got), refresh=True)  # type: ignore[arg-type]
        return 0

    try:
        guarded(out, body)
    except KeyboardInterrupt:
        sys.exit(0)


def event_line(e: Event) -> str:
    """Docker's `events` line: time, type, box id and its attributes."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(e.time))
    attrs = {"name": e.name, "image": e.image, **e.detail}
    shown = ", ".join(f"{k}={v}" for k, v in attrs.items())
    return f"{stamp}.{int(e.time % 1 * 1e6):06d} box {e.type} {e.box[:12]} ({shown})"


@click.command()
@click.option("--since", help="Events from this time: UNIX seconds, ISO 8601, or a "
                               "duration before now (10m, 1h).")
@click.option("--until", help="Events up to this time (same forms).")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="box=NAME|ID, type=TYPE, image=IMAGE; repeat a key for either value.")
@click.option("--follow", is_flag=True, help="Keep printing new events as they happen.")
@common_options
def events(since: str | None, until: str | None, filters: tuple[str, ...], follow: bool,
           as_json: bool, verbose: bool) -> None:
    """What happened to boxes, from the event log (one JSON line per event with --json)."""
    from microbox.sdk import parse_filters, parse_time

    out = Out("events", as_json, verbose)

    def body() -> int:
        wanted = parse_filters(filters)
        start = parse_time(since) if since else None
        end = parse_time(until) if until else None
        with Runtime(log=out.log) as rt:
            for e in rt.events(since=start, until=end, filters=wanted, follow=follow):
                click.echo(json.dumps(e.to_json()) if as_json else event_line(e))
                sys.stdout.flush()
        return 0

    try:
        guarded(out, body)
    except KeyboardInterrupt:
        sys.exit(0)
