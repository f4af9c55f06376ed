"""How a build reports: the steps (images/progress.py's Progress) and the
output of the commands its RUN steps run."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from microbox.images.progress import Progress


@runtime_checkable
class Report(Progress, Protocol):
    def output(self, data: bytes) -> None:
        """Lines a RUN step printed (stdout and stderr), each ending in a newline."""


class Steps:
    """A Report over a plain Progress: command output becomes step lines."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self.tty = progress.tty

    def step(self, text: str) -> None:
        self._progress.step(text)

    def advance(self, done: int, total: int | None) -> None:
        self._progress.advance(done, total)

    def output(self, data: bytes) -> None:
        self._progress.step(data.decode(errors="replace").rstrip("\n"))


def report_of(progress: Progress) -> Report:
    return progress if isinstance(progress, Report) else Steps(progress)
