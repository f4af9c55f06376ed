"""How image builders report progress: steps, and bytes within a step. The CLI
renders it (rich bars on a terminal, plain step lines otherwise)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    tty: bool  # a terminal is watching: tools may draw their own bars on stderr

    def step(self, text: str) -> None:
        """A new step, e.g. 'unpacking layer 2/3'."""

    def advance(self, done: int, total: int | None) -> None:
        """Bytes done so far in the current step."""


class Quiet:
    tty = False

    def step(self, text: str) -> None:
        pass

    def advance(self, done: int, total: int | None) -> None:
        pass


QUIET = Quiet()


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
