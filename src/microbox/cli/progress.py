"""Progress of image pulls and builds: a rich bar per step on a terminal, plain
step lines otherwise, nothing with --json."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

import click

from microbox.cli.output import Out


class CliProgress:
    """Implements microbox.images.progress.Progress for the CLI."""

    def __init__(self, out: Out) -> None:
        self.quiet = out.as_json
        self.tty = not out.as_json and sys.stderr.isatty()
        self._text = ""
        self._bar: Any = None
        self._task: Any = None
        self._console: Any = None

    def step(self, text: str) -> None:
        self._close_bar()
        self._text = text
        if self.quiet:
            return
        if self.tty:
            from rich.console import Console

            self._console = self._console or Console(stderr=True, highlight=False)
            self._console.print(f"[bold blue]•[/] {text}", markup=True)
        else:
            click.echo(f"microbox: {text}", err=True)

    def output(self, data: bytes) -> None:
        """What a build's RUN step printed, passed on to stderr as it came."""
        self._close_bar()
        if not self.quiet:
            sys.stderr.flush()
            sys.stderr.buffer.write(data)
            sys.stderr.buffer.flush()

    def advance(self, done: int, total: int | None) -> None:
        if not self.tty:
            return
        if self._bar is None:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(TextColumn("  {task.description}"), BarColumn(),
                                 DownloadColumn(), TransferSpeedColumn(), TimeElapsedColumn(),
                                 console=self._console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self._text[:40], total=total)
        self._bar.update(self._task, completed=done, total=total)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = self._task = None

    def __enter__(self) -> CliProgress:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._close_bar()
