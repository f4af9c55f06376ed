"""Lifecycle commands: create, start, stop, restart, pause, resume, delete, set."""

from __future__ import annotations

from collections.abc import Callable

import click

from microbox.cli.common import common_options, guarded, spec_from, spec_options
from microbox.cli.output import Out
from microbox.cli.render import record_json
from microbox.core import control, lifecycle
from microbox.core.vm import Log
from microbox.sdk import Runtime
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database


@click.command()
@spec_options
@click.option("--start", "start_now", is_flag=True, help="Start the box right away.")
@common_options
@click.argument("image")
def create(name: str | None, cpus: int, memory: int, env: tuple[str, ...],
           workdir: str | None, user: str | None, accel: str, kernel: str | None,
           start_now: bool, as_json: bool, verbose: bool, image: str) -> None:
    """Create a box from IMAGE (stopped unless --start)."""
    out = Out("create", as_json, verbose)

    def body() -> None:
        with Runtime(log=out.log) as rt:
            spec = spec_from(image, cpus, memory, env, workdir, user, accel, kernel)
            record, lock = lifecycle.create(rt.db, spec, name=name, start_next=start_now)
            if start_now:
                started = lifecycle.start(rt.db, record, lock, attached=False, log=out.log)
                started.channel.close()
                record = started.record
            else:
                lock.close()
            out.result(record_json(record), record.id)

    guarded(out, body)


Action = Callable[[Database, BoxRecord, Log], BoxRecord]


def _one(name: str, help_: str, action: Action) -> click.Command:
    """A command that applies one control action to one box."""

    @click.command(name=name, help=help_)
    @common_options
    @click.argument("box")
    def cmd(as_json: bool, verbose: bool, box: str) -> None:
        out = Out(name, as_json, verbose)

        def body() -> None:
            with Runtime(log=out.log) as rt:
                record = action(rt.db, rt.resolve(box), out.log)
                out.result(record_json(record), record.name)

        guarded(out, body)

    return cmd


start = _one("start", "Start a stopped box (detached).", control.start)
pause = _one("pause", "Freeze a running box's vCPUs.", lambda db, r, _log: control.pause(db, r))
resume = _one("resume", "Thaw a paused box.", lambda db, r, _log: control.resume(db, r))


@click.command()
@click.option("-t", "--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for a graceful stop before SIGTERM, then SIGKILL.")
@common_options
@click.argument("box")
def stop(timeout: float, as_json: bool, verbose: bool, box: str) -> None:
    """Stop a box: the guest syncs its disk and powers off."""
    out = Out("stop", as_json, verbose)

    def body() -> None:
        with Runtime(log=out.log) as rt:
            record = control.stop(rt.db, rt.resolve(box), timeout)
            out.result(record_json(record), record.name)

    guarded(out, body)


@click.command()
@click.option("-t", "--timeout", type=float, default=10.0, show_default=True)
@common_options
@click.argument("box")
def restart(timeout: float, as_json: bool, verbose: bool, box: str) -> None:
    """Stop a box, then start it again."""
    out = Out("restart", as_json, verbose)

    def body() -> None:
        with Runtime(log=out.log) as rt:
            record = control.restart(rt.db, rt.resolve(box), timeout, log=out.log)
            out.result(record_json(record), record.name)

    guarded(out, body)


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
                record = rt.resolve(ref)
                control.delete(rt.db, record, force)
                deleted.append(record.id)
                if not out.as_json:
                    click.echo(record.name)
        out.result({"deleted": deleted})

    guarded(out, body)


@click.command(name="set")
@click.option("--cpus", type=int, help="Virtual CPUs.")
@click.option("--memory", type=int, help="Memory in MiB.")
@common_options
@click.argument("box")
def set_(cpus: int | None, memory: int | None, as_json: bool, verbose: bool, box: str) -> None:
    """Change a stopped box's CPUs or memory (applied at its next start)."""
    out = Out("set", as_json, verbose)

    def body() -> None:
        if cpus is None and memory is None:
            raise click.UsageError("give --cpus and/or --memory")
        with Runtime(log=out.log) as rt:
            record = control.set_resources(rt.db, rt.resolve(box), cpus=cpus,
                                           memory_mib=memory)
            out.result(record_json(record), record.name)

    guarded(out, body)
