"""`microbox build` (an image from a Dockerfile) and `microbox commit` (an
image from a box): both over rt.images.build and Box.commit."""

from __future__ import annotations

import click

from microbox.cli.common import common_options, guarded
from microbox.cli.images import show_image
from microbox.cli.output import Out
from microbox.cli.progress import CliProgress
from microbox.sdk import Runtime
from microbox.spec import parse_env


@click.command()
@click.argument("context", type=click.Path(file_okay=False), default=".")
@click.option("-t", "--tag", metavar="NAME[:TAG]", help="Name of the image made.")
@click.option("-f", "--file", "dockerfile", metavar="PATH",
              help="The Dockerfile (default: CONTEXT/Dockerfile).")
@click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE",
              help="A build argument (repeatable).")
@click.option("--target", metavar="STAGE", help="Build up to this stage.")
@click.option("--no-cache", is_flag=True, help="Run every step, using no cached layer.")
@click.option("--net", "--network", "net", default="user", show_default=True,
              type=click.Choice(["user", "none", "tap"]), help="The RUN steps' network.")
@common_options
def build(context: str, tag: str | None, dockerfile: str | None, build_args: tuple[str, ...],
          target: str | None, no_cache: bool, net: str, as_json: bool, verbose: bool) -> None:
    """Build an image from a Dockerfile; each RUN runs in a box, each step is cached."""
    out = Out("build", as_json, verbose)

    def body() -> None:
        args = parse_env(list(build_args))
        with Runtime(log=out.log) as rt, CliProgress(out) as progress:
            img = rt.images.build(context, tag=tag, dockerfile=dockerfile, build_args=args,
                                  target=target, no_cache=no_cache, net=net,
                                  progress=progress)
        show_image(out, img)

    guarded(out, body)


@click.command()
@click.argument("box")
@click.argument("name")
@click.option("-c", "--change", "changes", multiple=True, metavar="INSTRUCTION",
              help="A Dockerfile line for the image's config, e.g. 'CMD [\"app\"]' "
                   "(repeatable).")
@common_options
def commit(box: str, name: str, changes: tuple[str, ...], as_json: bool,
           verbose: bool) -> None:
    """Make an image of BOX's disk and config (a running box is paused for the copy)."""
    out = Out("commit", as_json, verbose)

    def body() -> None:
        with Runtime(log=out.log) as rt, CliProgress(out) as progress:
            img = rt.boxes.get(box).commit(name, changes=list(changes), progress=progress)
        show_image(out, img)

    guarded(out, body)
