"""Options and error handling shared by every command."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from microbox.cli.output import Out
from microbox.errors import MicroboxError

F = TypeVar("F", bound=Callable[..., Any])


def common_options(f: F) -> F:
    f = click.option("--json", "as_json", is_flag=True, help="Print one JSON envelope.")(f)
    f = click.option("-v", "--verbose", is_flag=True, help="Explain what happens, on stderr.")(f)
    return f


def guarded(out: Out, body: Callable[[], int | None]) -> None:
    """Run a command body; a MicroboxError becomes its message and exit code."""
    try:
        code = body()
    except MicroboxError as err:
        sys.exit(out.fail(err))
    sys.exit(code or 0)
