"""`microbox kernel build`, `microbox agent build` (images: cli/images.py)."""

from __future__ import annotations

import click

from microbox.cli.common import common_options, guarded
from microbox.cli.output import Out
from microbox.cli.progress import CliProgress
from microbox.sdk import Runtime


@click.group()
def kernel() -> None:
    """The guest kernel."""


@kernel.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if cached.")
@common_options
def kernel_build_cmd(force: bool, as_json: bool, verbose: bool) -> None:
    """Build the guest vmlinux from the distribution's kernel source (cached)."""
    out = Out("kernel build", as_json, verbose)

    def body() -> None:
        with CliProgress(out) as progress:
            path = Runtime().host.build_kernel(force=force, progress=progress)
        out.result({"path": str(path)}, str(path))

    guarded(out, body)


@click.group()
def agent() -> None:
    """The guest agent."""


@agent.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if cached.")
@common_options
def agent_build_cmd(force: bool, as_json: bool, verbose: bool) -> None:
    """Build the static guest agent, its initramfs and the box shim (cached)."""
    out = Out("agent build", as_json, verbose)

    def body() -> None:
        path = Runtime().host.build_agent(force=force)
        out.result({"path": str(path)}, str(path))

    guarded(out, body)
