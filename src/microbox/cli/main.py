"""The `microbox` command: a thin layer of parsing and rendering over the SDK."""

from __future__ import annotations

import click

from microbox import __version__
from microbox.cli import build, run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="microbox")
def cli() -> None:
    """Disposable, hardware-isolated Linux microVMs."""


cli.add_command(run.run)
cli.add_command(build.kernel)
cli.add_command(build.agent)
cli.add_command(build.image)


def main() -> None:
    cli(prog_name="microbox")
