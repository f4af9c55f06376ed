"""`microbox run`: create a box, run one command in it, and tear it down."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from microbox.cli.attach import (
    Interrupted,
    exec_attached,
    ignore_signals,
    signals_abort,
)
from microbox.cli.common import (
    box_common_options,
    from_option,
    given_spec,
    guarded,
    refuse_options_after,
    spec_from,
    spec_options,
    takes_value,
)
from microbox.cli.output import Out
from microbox.cli.progress import CliProgress
from microbox.sdk import Box, Runtime
from microbox.spec import DEFAULT_IMAGE


class DefaultImage(click.Command):
    """`run [OPTIONS] -- COMMAND` names no image: the default one is meant, unless
    `--from FILE` names a pack. (click drops a `--` met before any argument, so it
    is looked for here.)"""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        i = 0
        from_pack = False
        while i < len(args) and args[i].startswith("-") and args[i] != "--":
            from_pack = from_pack or args[i] == "--from" or args[i].startswith("--from=")
            i += 2 if takes_value(self, args[i]) else 1
        if i < len(args) and args[i] == "--":
            args = [*args[:i], "" if from_pack else DEFAULT_IMAGE, *args[i:]]
        return super().parse_args(ctx, args)


@click.command(cls=DefaultImage, context_settings={"allow_interspersed_args": False})
@click.option("--rm", "remove", is_flag=True, help="Remove the box when the command exits.")
@click.option("-d", "--detach", is_flag=True,
              help="Run in the background and print the box id; the box lives as long as "
                   "COMMAND (without one, until stopped).")
@spec_options
@from_option
@click.option("-i", "--interactive", is_flag=True, help="Forward stdin to the command.")
@click.option("-t", "--tty", "use_tty", is_flag=True, help="Give the command a terminal.")
@click.option("--timeout", type=float, help="Kill the command after this many seconds.")
@click.option("--entrypoint", help="Program to run instead of the image's entrypoint, with "
              "COMMAND as its arguments.")
@box_common_options
@click.argument("image", required=False)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(remove: bool, detach: bool, name: str | None, cpus: int, memory: int,
        env: tuple[str, ...], workdir: str | None, user: str | None,
        labels: tuple[str, ...], interactive: bool,
        use_tty: bool, timeout: float | None, entrypoint: str | None, accel: str,
        kernel: str | None, cold: bool, publish: tuple[str, ...], from_pack: str | None,
        as_json: bool, verbose: bool, image: str | None, command: tuple[str, ...],
        **net: Any) -> None:
    """Run COMMAND in a new box made from IMAGE (default: debian), or from a pack
    with `run --from FILE [--] COMMAND` (no IMAGE then).

    As in Docker, COMMAND replaces the image's Cmd, --entrypoint its Entrypoint,
    -e adds to its Env, and its WorkingDir and User apply unless -w/-u are given.
    An image that is missing is built (busybox, debian) or pulled (a registry
    reference).

    The exit code is the command's: 128+N if a signal N killed it, 127 if it
    was not found, 126 if it could not be executed.
    """
    out = Out("run", as_json, verbose)
    if use_tty and not os.isatty(0):
        raise click.UsageError("the input device is not a TTY; drop -t or run from a terminal")
    if detach and (interactive or use_tty):
        raise click.UsageError("-d cannot be combined with -i or -t")
    if as_json and use_tty:
        raise click.UsageError("--json cannot be combined with -t")
    if command[:1] == ("--",):  # options ended at IMAGE, so click kept the separator
        command = command[1:]
    elif image and from_pack is None:  # with a pack, IMAGE's place is the command's
        refuse_options_after(click.get_current_context(), command, image, "IMAGE")
    if from_pack is not None and image:  # no IMAGE with a pack: it began COMMAND
        command = (image, *command)

    def body() -> int:
        rt = Runtime(log=out.log)
        with signals_abort():
            try:
                spec = spec_from(image or DEFAULT_IMAGE, cpus, memory, env, workdir, user,
                                 labels, accel, kernel, cold, publish, **net)
                with CliProgress(out) as progress:
                    if from_pack is not None:
                        spec = rt.images.import_pack(from_pack, box_name=name,
                                                     progress=progress,
                                                     overrides=given_spec(spec))
                    box = rt.boxes.run(spec=spec, command=command, entrypoint=entrypoint,
                                       name=name, rm=remove, detach=detach, progress=progress)
            except Interrupted as sig:
                return 128 + sig.signum
        if detach:
            out.result({"id": box.id, "name": box.name}, box.id)
            return 0
        return _attached(out, box, box.main, interactive, use_tty, timeout)

    guarded(out, body)


def _attached(out: Out, box: Box, argv: list[str], interactive: bool, use_tty: bool,
              timeout: float | None) -> int:
    try:
        return exec_attached(out, box, argv, stdin=interactive, use_tty=use_tty,
                             timeout=timeout)
    finally:
        ignore_signals()
        sys.stdout.flush()
        box.close()
