"""`microbox run`: create a box, run one command in it, and tear it down."""

from __future__ import annotations

import os
import sys

import click

from microbox.cli.attach import (
    Interrupted,
    complete,
    ignore_signals,
    signals_abort,
    terminal_size,
)
from microbox.cli.common import common_options, guarded
from microbox.cli.output import Out
from microbox.core.spec import ACCELS, DEFAULT_MEMORY_MIB, parse_env
from microbox.errors import ExecFailed
from microbox.sdk import Box, Runtime

DEFAULT_CMD = ["/bin/sh"]


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--rm", "remove", is_flag=True, help="Remove the box when the command exits.")
@click.option("-d", "--detach", is_flag=True, help="Leave the box running; print its id.")
@click.option("--name", help="Name of the box.")
@click.option("--cpus", type=int, default=1, show_default=True, help="Virtual CPUs.")
@click.option("--memory", type=int, default=DEFAULT_MEMORY_MIB, show_default=True,
              help="Memory in MiB.")
@click.option("-e", "--env", multiple=True, metavar="KEY=VALUE", help="Environment variable.")
@click.option("-w", "--workdir", help="Working directory inside the box.")
@click.option("-u", "--user", help="User name or uid[:gid] inside the box.")
@click.option("-i", "--interactive", is_flag=True, help="Forward stdin to the command.")
@click.option("-t", "--tty", "use_tty", is_flag=True, help="Give the command a terminal.")
@click.option("--timeout", type=float, help="Kill the command after this many seconds.")
@click.option("--entrypoint", help="Program to run, with CMD as its arguments.")
@click.option("--accel", type=click.Choice(ACCELS), default="auto", show_default=True)
@click.option("--kernel", type=click.Path(dir_okay=False), help="Use this vmlinux.")
@common_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(remove: bool, detach: bool, name: str | None, cpus: int, memory: int,
        env: tuple[str, ...], workdir: str | None, user: str | None, interactive: bool,
        use_tty: bool, timeout: float | None, entrypoint: str | None, accel: str,
        kernel: str | None, as_json: bool, verbose: bool, image: str,
        command: tuple[str, ...]) -> None:
    """Run COMMAND in a new box made from IMAGE.

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
    if detach and remove:
        raise click.UsageError("--rm cannot be combined with -d; remove the box later with "
                               "'microbox delete NAME'")
    if command[:1] == ("--",):  # options ended at IMAGE, so click kept the separator
        command = command[1:]
    argv = ([entrypoint] if entrypoint else []) + list(command)
    if not argv and not detach:
        argv = list(DEFAULT_CMD)

    def body() -> int:
        rt = Runtime(log=out.log)
        with signals_abort():
            try:
                box = rt.run(image, name=name, cpus=cpus, memory_mib=memory,
                             env=parse_env(env), workdir=workdir, user=user, accel=accel,
                             kernel=kernel, rm=remove, detach=detach)
            except Interrupted as sig:
                return 128 + sig.signum
        if detach:
            return _detached(out, box, argv)
        return _attached(out, box, argv, interactive, use_tty, timeout)

    guarded(out, body)


def _detached(out: Out, box: Box, argv: list[str]) -> int:
    try:
        if argv:
            box.exec(argv, detach=True)
    except BaseException:
        box.close()
        raise
    box.release()
    out.result({"id": box.id, "name": box.name}, box.id)
    return 0


def _attached(out: Out, box: Box, argv: list[str], interactive: bool, use_tty: bool,
              timeout: float | None) -> int:
    rows, cols = terminal_size()
    try:
        try:
            ex = box.exec(argv, stdin=interactive, tty=use_tty, rows=rows, cols=cols,
                          timeout=timeout)
        except ExecFailed as exc:
            return out.fail(exc)
        return complete(out, ex, stdin=interactive, use_tty=use_tty, timeout=timeout)
    except Interrupted as sig:
        return 128 + sig.signum
    finally:
        ignore_signals()
        sys.stdout.flush()
        box.close()
