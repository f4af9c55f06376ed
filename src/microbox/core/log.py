"""The callback a long step reports its progress through, one line at a time
(the CLI's -v prints it to stderr; the SDK's default drops it)."""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]


def quiet(_: str) -> None:
    pass
