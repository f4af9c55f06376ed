"""Rendering: the --json envelope, one-line errors, rich tables. No business logic."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import click

from microbox.envelope import envelope as build_envelope
from microbox.errors import MicroboxError


@dataclass
class Out:
    command: str
    as_json: bool = False
    verbose: bool = False

    def log(self, line: str) -> None:
        """--verbose diagnostics, on stderr."""
        if self.verbose:
            click.echo(f"microbox: {line}", err=True)

    def info(self, line: str) -> None:
        if not self.as_json:
            click.echo(line, err=True)

    def result(self, data: Any, human: str | None = None) -> None:
        if self.as_json:
            envelope(self.command, 0, data)
        elif human is not None:
            click.echo(human)

    def fail(self, err: MicroboxError) -> int:
        if self.as_json:
            envelope(self.command, err.exit_code, None, err)
        else:
            click.echo(f"microbox: {err}", err=True)
        return err.exit_code


def envelope(command: str, exit_code: int, data: Any, err: MicroboxError | None = None) -> None:
    body = build_envelope(command, exit_code, data, err)
    sys.stdout.write(json.dumps(body) + "\n")
    sys.stdout.flush()
