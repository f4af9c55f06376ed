"""The `microbox` command: a thin layer of parsing and rendering over the SDK.

Each command's module is imported when the command runs (or when --help lists
them all), so `microbox exec` does not import what `image build` needs."""

from __future__ import annotations

import importlib

import click

from microbox import __version__

# name -> "module:attribute". Several names for one command are Docker's verbs,
# the names Docker users type first (ls, ps, rm, ssh, images, pull).
COMMANDS = {
    "agent": "microbox.cli.build:agent",
    "build": "microbox.cli.imagebuild:build",
    "cleanup": "microbox.cli.maint:cleanup",
    "commit": "microbox.cli.imagebuild:commit",
    "connect": "microbox.cli.inside:connect",
    "cp": "microbox.cli.cp:cp",
    "create": "microbox.cli.boxes:create",
    "delete": "microbox.cli.boxes:delete",
    "doctor": "microbox.cli.maint:doctor",
    "events": "microbox.cli.observe:events",
    "exec": "microbox.cli.query:exec_",
    "export": "microbox.cli.cp:export",
    "fork": "microbox.cli.snapshots:fork",
    "gc": "microbox.cli.maint:gc",
    "image": "microbox.cli.images:image",
    "images": "microbox.cli.images:list_cmd",
    "inspect": "microbox.cli.query:inspect",
    "kernel": "microbox.cli.build:kernel",
    "kill": "microbox.cli.maint:kill",
    "list": "microbox.cli.query:list_",
    "logs": "microbox.cli.query:logs",
    "ls": "microbox.cli.query:list_",
    "mcp": "microbox.cli.mcp:mcp",
    "pack": "microbox.cli.packs:pack",
    "pause": "microbox.cli.boxes:pause",
    "pool": "microbox.cli.pool:pool",
    "port": "microbox.cli.inside:port",
    "ps": "microbox.cli.query:list_",
    "pull": "microbox.cli.images:pull_cmd",
    "restart": "microbox.cli.boxes:restart",
    "resume": "microbox.cli.boxes:resume",
    "rm": "microbox.cli.boxes:delete",
    "run": "microbox.cli.run:run",
    "serve": "microbox.cli.serve:serve",
    "set": "microbox.cli.boxes:set_",
    "shell": "microbox.cli.inside:shell",
    "snapshot": "microbox.cli.snapshots:snapshot",
    "ssh": "microbox.cli.inside:shell",
    "ssh-config": "microbox.cli.inside:ssh_config",
    "start": "microbox.cli.boxes:start",
    "stats": "microbox.cli.observe:stats",
    "stop": "microbox.cli.boxes:stop",
    "volume": "microbox.cli.volumes:volume",
    "workspace": "microbox.cli.workspace:workspace",
}


class _Commands(click.Group):
    """A group whose commands are imported by name when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="microbox")
def cli() -> None:
    """Disposable, hardware-isolated Linux microVMs."""


def main() -> None:
    cli(prog_name="microbox")
