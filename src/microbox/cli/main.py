"""The `microbox` command: a thin layer of parsing and rendering over the SDK."""

from __future__ import annotations

import click

from microbox import __version__
from microbox.cli import (
    boxes,
    build,
    cp,
    images,
    inside,
    maint,
    packs,
    query,
    run,
    snapshots,
    workspace,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="microbox")
def cli() -> None:
    """Disposable, hardware-isolated Linux microVMs."""


cli.add_command(run.run)
for command in (boxes.create, boxes.start, boxes.stop, boxes.restart, boxes.pause,
                boxes.resume, boxes.delete, boxes.set_, query.list_, query.inspect, query.logs,
                query.exec_, cp.cp, inside.shell, inside.port, inside.connect,
                inside.ssh_config, maint.cleanup, maint.kill, maint.gc, maint.doctor):
    cli.add_command(command)
cli.add_command(query.list_, name="ls")
# Docker's verbs, the same commands under the names Docker users type first.
cli.add_command(query.list_, name="ps")
cli.add_command(boxes.delete, name="rm")
cli.add_command(inside.shell, name="ssh")
cli.add_command(images.list_cmd, name="images")
cli.add_command(images.pull_cmd, name="pull")
cli.add_command(build.kernel)
cli.add_command(build.agent)
cli.add_command(images.image)
cli.add_command(snapshots.snapshot)
cli.add_command(packs.pack)
cli.add_command(snapshots.fork)
cli.add_command(workspace.workspace)
cli.add_command(__import__("microbox.cli.serve", fromlist=["serve"]).serve)  # FastAPI loads lazily
cli.add_command(__import__("microbox.cli.mcp", fromlist=["mcp"]).mcp)  # the SDK loads lazily


def main() -> None:
    cli(prog_name="microbox")
