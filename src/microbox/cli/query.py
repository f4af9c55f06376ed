"""Commands that look at boxes or work inside them: list, inspect, logs, exec."""

from __future__ import annotations

import json
import os
import sys

import click

from microbox.cli.attach import exec_attached
from microbox.cli.common import common_options, guarded, refuse_options_after
from microbox.cli.output import Out
from microbox.cli.render import boxes_table
from microbox.sdk import STATUSES, Runtime
from microbox.spec import parse_env


@click.command(name="list")
@click.option("-a", "--all", "show_all", is_flag=True, help="Show stopped boxes too.")
@click.option("--status", type=click.Choice(STATUSES), help="Only boxes in this state.")
@click.option("-q", "--quiet", is_flag=True, help="Print ids only.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="label=KEY[=VALUE]",
              help="Only boxes with this label (Docker's filter syntax).")
@common_options
def list_(show_all: bool, status: str | None, quiet: bool, filters: tuple[str, ...],
          as_json: bool, verbose: bool) -> None:
    """List boxes (running and paused ones unless --all)."""
    out = Out("list", as_json, verbose)

    def body() -> None:
        with Runtime(log=out.log) as rt:
            found = rt.boxes.list(all=show_all, status=status, labels=_label_filters(filters))
            if out.as_json:
                out.result([b.info().to_json() for b in found])
            elif quiet:
                for b in found:
                    click.echo(b.id)
            else:
                boxes_table(found)

    guarded(out, body)


def _label_filters(filters: tuple[str, ...]) -> dict[str, str | None]:
    wanted: dict[str, str | None] = {}
    for f in filters:
        kind, _, rest = f.partition("=")
        if kind != "label" or not rest:
            raise click.UsageError(f"bad filter {f!r}; use --filter label=KEY or label=KEY=VALUE")
        key, sep, value = rest.partition("=")
        wanted[key] = value if sep else None
    return wanted


@click.command()
@common_options
@click.argument("box")
def inspect(as_json: bool, verbose: bool, box: str) -> None:
    """Show everything known about a box, as JSON."""
    out = Out("inspect", as_json, verbose)

    def body() -> None:
        with Runtime(log=out.log) as rt:
            data = rt.boxes.get(box).info().to_json()
        if out.as_json:
            out.result(data)
        else:
            click.echo(json.dumps(data, indent=2))

    guarded(out, body)


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output.")
@click.option("-n", "--tail", type=int, help="Only the last N lines.")
@click.option("--net", "net", is_flag=True,
              help="The network log instead: one line per connection the box's proxy "
                   "refused (time, number, destination, reason).")
@common_options
@click.argument("box")
def logs(follow: bool, tail: int | None, net: bool, as_json: bool, verbose: bool,
         box: str) -> None:
    """Print a box's console log (or, with --net, its network log)."""
    out = Out("logs", as_json, verbose)
    if as_json and follow:
        raise click.UsageError("--json cannot be combined with --follow")
    if net and follow:
        raise click.UsageError("--net cannot be combined with --follow")

    def body() -> int:
        with Runtime() as rt:
            handle = rt.boxes.get(box)
            if net:
                return _net_log(out, handle.net_log(), handle.net_info(), tail)
            if out.as_json:
                out.result({"log": handle.logs(tail).decode(errors="replace")})
                return 0
            for chunk in handle.follow_logs(tail, follow=follow):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
        return 0

    guarded(out, body)


def _net_log(out: Out, log: bytes, info: dict[str, object], tail: int | None) -> int:
    lines = log.splitlines(keepends=True)
    if tail is not None:
        lines = lines[-tail:] if tail > 0 else []
    refused = info.get("refused", 0)
    if out.as_json:
        out.result({"log": b"".join(lines).decode(errors="replace"), "refused": refused,
                    "mode": info.get("mode")})
        return 0
    sys.stdout.buffer.write(b"".join(lines))
    sys.stdout.flush()
    if info.get("mode") == "none":
        click.echo("microbox: the box has no network (--net none)", err=True)
    else:
        click.echo(f"microbox: {refused} connection(s) refused", err=True)
    return 0


@click.command(name="exec", context_settings={"allow_interspersed_args": False})
@click.option("-e", "--env", multiple=True, metavar="KEY=VALUE", help="Environment variable.")
@click.option("-w", "--workdir", help="Working directory.")
@click.option("-u", "--user", help="User name or uid[:gid].")
@click.option("-i", "--interactive", is_flag=True, help="Forward stdin.")
@click.option("-t", "--tty", "use_tty", is_flag=True, help="Give the command a terminal.")
@click.option("--timeout", type=float,
              help="Kill the command's process group after this many seconds (exit 124).")
@click.option("-d", "--detach", is_flag=True,
              help="Start COMMAND in the background; its output goes to `microbox logs`.")
@common_options
@click.argument("box")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(env: tuple[str, ...], workdir: str | None, user: str | None, interactive: bool,
          use_tty: bool, timeout: float | None, detach: bool, as_json: bool, verbose: bool,
          box: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in a running box; exits with its exit code."""
    out = Out("exec", as_json, verbose)
    if detach and (interactive or use_tty or timeout is not None):
        raise click.UsageError("-d cannot be combined with -i, -t or --timeout")
    if as_json and use_tty:
        raise click.UsageError("--json cannot be combined with -t")
    if use_tty and not os.isatty(0):
        raise click.UsageError("the input device is not a TTY; drop -t or run from a terminal")
    if command[:1] == ("--",):
        command = command[1:]
    else:
        refuse_options_after(click.get_current_context(), command, box, "BOX")
    if not command:
        raise click.UsageError("no command given: microbox exec BOX -- CMD [ARG...]")

    def body() -> int:
        with Runtime() as rt:
            handle = rt.boxes.get(box)
            try:
                if detach:
                    pid = handle.exec(list(command), env=parse_env(env), cwd=workdir,
                                      user=user, detach=True).pid
                    out.log(f"started pid {pid} in the box; its output goes to "
                            f"'microbox logs {handle.name}'")
                    out.result({"pid": pid})
                    return 0
                return exec_attached(out, handle, list(command), env=parse_env(env),
                                     cwd=workdir, user=user, stdin=interactive,
                                     use_tty=use_tty, timeout=timeout)
            finally:
                handle.close()

    guarded(out, body)
