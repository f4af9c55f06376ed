"""`microbox kernel build`, `microbox agent build`, `microbox image build`."""

from __future__ import annotations

import click

from microbox.cli.common import common_options, guarded
from microbox.cli.output import Out
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
        path = Runtime(log=out.log).build_kernel(force=force)
        out.result({"path": str(path)}, str(path))

    guarded(out, body)


@click.group()
def agent() -> None:
    """The guest agent."""


@agent.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if cached.")
@common_options
def agent_build_cmd(force: bool, as_json: bool, verbose: bool) -> None:
    """Build the static guest agent and its initramfs (cached)."""
    out = Out("agent build", as_json, verbose)

    def body() -> None:
        path = Runtime.build_agent(force=force)
        out.result({"path": str(path)}, str(path))

    guarded(out, body)


@click.group()
def image() -> None:
    """Images."""


@image.command("build")
@click.argument("name", type=click.Choice(Runtime.builtin_images()))
@click.option("--force", is_flag=True, help="Rebuild even if present.")
@common_options
def image_build_cmd(name: str, force: bool, as_json: bool, verbose: bool) -> None:
    """Build a built-in image (kept if already present)."""
    out = Out("image build", as_json, verbose)

    def body() -> None:
        with Runtime() as rt:
            img = rt.build_image(name, force=force)
        out.result({"name": img.name, "digest": img.digest, "size": img.size},
                   f"{img.name} {img.digest[:19]}")

    guarded(out, body)


@image.command("list")
@common_options
def image_list_cmd(as_json: bool, verbose: bool) -> None:
    """List images in the store (built-in ones are built on first use)."""
    out = Out("image list", as_json, verbose)

    def body() -> None:
        with Runtime() as rt:
            images = rt.images()
        rows = [{"name": i.name, "digest": i.digest, "size": i.size, "source": i.source}
                for i in images]
        human = "\n".join(f"{i.name:<16} {i.digest[:19]}  {i.size >> 20} MiB  {i.source}"
                          for i in images)
        builtin = ", ".join(n for n in Runtime.builtin_images()
                            if n not in {i.name for i in images})
        if builtin:
            human += ("\n" if human else "") + f"(built on first use: {builtin})"
        out.result(rows, human)

    guarded(out, body)
