"""Lifecycle commands: create, start, stop, restart, pause, resume, delete, set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from microbox.cli.common import (
    box_common_options,
    common_options,
    from_option,
    given_spec,
    guarded,
    net_options,
    spec_from,
    spec_options,
)
from microbox.cli.output import Out
from microbox.cli.progress import CliProgress
from microbox.sdk import Box, Runtime
from microbox.spec import DEFAULT_IMAGE


@click.command()
@spec_options
@from_option
@click.option("--start", "start_now", is_flag=True, help="Start the box right away.")
@box_common_options
@click.argument("image", required=False)
def create(name: str | None, cpus: int, memory: int, env: tuple[str, ...],
           workdir: str | None, user: str | None, labels: tuple[str, ...], accel: str,
           kernel: str | None, cold: bool, publish: tuple[str, ...], from_pack: str | None,
           start_now: bool,
           as_json: bool, verbose: bool, image: str | None, **net: Any) -> None:
    """Create a box from IMAGE (default: debian; stopped unless --start), or from a
    pack with --from FILE. A missing image is built or pulled; its Env, WorkingDir
    and User become the box's defaults."""
    out = Out("create", as_json, verbose)
    if from_pack is not None and image is not None:
        raise click.UsageError("give IMAGE or --from FILE, not both")

    def body() -> None:
        spec = spec_from(image or DEFAULT_IMAGE, cpus, memory, env, workdir, user, labels,
                         accel, kernel, cold, publish, **net)
        with Runtime(log=out.log) as rt, CliProgress(out) as progress:
            if from_pack is not None:
                box = rt.boxes.create(from_pack=from_pack, name=name, start=start_now,
                                progress=progress, **given_spec(spec))
            else:
                box = rt.boxes.create(spec=spec, name=name, start=start_now, progress=progress)
            box.release()
            out.result(box.info().to_json(), box.id)

    guarded(out, body)


def _one(name: str, help_: str, action: Callable[[Box], object]) -> click.Command:
    """A command that applies one action to one box and prints its name."""

    @click.command(name=name, help=help_)
    @common_options
    @click.argument("box")
    def cmd(as_json: bool, verbose: bool, box: str) -> None:
        out = Out(name, as_json, verbose)

        def body() -> None:
            with Runtime(log=out.log) as rt:
                handle = rt.boxes.get(box)
                action(handle)
                out.result(handle.info().to_json(), handle.name)

        guarded(out, body)

    return cmd


start = _one("start", "Start a stopped box (detached).", Box.start)
pause = _one("pause", "Freeze a running box's vCPUs.", Box.pause)
resume = _one("resume", "Thaw a paused box.", Box.resume)


def _timed(name: str, help_: str, action: Callable[[Box, float], object]) -> click.Command:
    """A command with a -t/--timeout that applies one action to one box."""

    @click.command(name=name, help=help_)
    @click.option("-t", "--timeout", type=float, default=10.0, show_default=True,
                  help="Seconds to wait for a graceful stop before SIGTERM, then SIGKILL.")
    @common_options
    @click.argument("box")
    def cmd(timeout: float, as_json: bool, verbose: bool, box: str) -> None:
        out = Out(name, as_json, verbose)

        def body() -> None:
            with Runtime(log=out.log) as rt:
                handle = rt.boxes.get(box)
                action(handle, timeout)
                out.result(handle.info().to_json(), handle.name)

        guarded(out, body)

    return cmd


stop = _timed("stop", "Stop a box: the guest syncs its disk and powers off.", Box.stop)
restart = _timed("restart", "Stop a box, then start it again.", Box.restart)


@click.command()
@click.option("-f", "--force", is_flag=True, help="Kill the box first if it is running.")
@common_options
@click.argument("box", nargs=-1, required=True)
def delete(force: bool, as_json: bool, verbose: bool, box: tuple[str, ...]) -> None:
    """Delete boxes (a running one needs -f)."""
    out = Out("delete", as_json, verbose)

    def body() -> None:
        deleted = []
        with Runtime(log=out.log) as rt:
            for ref in box:
                handle = rt.boxes.get(ref)
                handle.delete(force)
                deleted.append(handle.id)
                if not out.as_json:
                    click.echo(handle.name)
        out.result({"deleted": deleted})

    guarded(out, body)


def _set_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed([
        click.option("--cpus", type=int, help="Virtual CPUs."),
        click.option("--memory", type=int, help="Memory in MiB."),
        *net_options(for_set=True),
        click.option("--reset-policy", is_flag=True,
                     help="Drop the box's egress policy (allows, denies, added hosts) before "
                          "applying the other flags."),
    ]):
        f = opt(f)
    return f


@click.command(name="set")
@_set_options
@common_options
@click.argument("box")
def set_(cpus: int | None, memory: int | None, net: str | None, allow_host: tuple[str, ...],
         allow_cidr: tuple[str, ...], deny_all: bool | None, allow_private: bool | None,
         add_host: tuple[str, ...], reset_policy: bool, as_json: bool, verbose: bool,
         box: str) -> None:
    """Change a stopped box's CPUs, memory or network (applied at its next start)."""
    out = Out("set", as_json, verbose)
    changes: dict[str, Any] = {
        "cpus": cpus, "memory_mib": memory, "net": net, "deny_all": deny_all,
        "allow_private": allow_private, "allow_hosts": allow_host or None,
        "allow_cidrs": allow_cidr or None, "add_hosts": add_host or None}

    def body() -> None:
        if all(v is None for v in changes.values()) and not reset_policy:
            raise click.UsageError("give --cpus, --memory, or a network flag (--net, "
                                   "--allow-host, --allow-cidr, --deny-all, --allow-private, "
                                   "--add-host, --reset-policy)")
        with Runtime(log=out.log) as rt:
            handle = rt.boxes.get(box).set(reset_policy=reset_policy, **changes)
            out.result(handle.info().to_json(), handle.name)

    guarded(out, body)
