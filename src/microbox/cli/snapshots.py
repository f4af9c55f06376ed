"""`microbox snapshot ...` and `microbox fork`: thin over the SDK's snapshots."""

from __future__ import annotations

import click

from microbox.cli.common import common_options, guarded
from microbox.cli.output import Out
from microbox.cli.render import ago, print_table
from microbox.images.progress import human
from microbox.sdk import Runtime


@click.group()
def snapshot() -> None:
    """Snapshots of running boxes: memory, devices and disk."""


@snapshot.command("create")
@click.argument("box")
@click.argument("name", required=False)
@common_options
def create_cmd(box: str, name: str | None, as_json: bool, verbose: bool) -> None:
    """Snapshot a running or paused BOX (it keeps running) as NAME."""
    out = Out("snapshot create", as_json, verbose)

    def body() -> None:
        with Runtime(log=out.log) as rt:
            snap = rt.boxes.get(box).snapshot(name)
        out.result(snap.to_json(), snap.name)

    guarded(out, body)


@snapshot.command("ls")
@common_options
def ls_cmd(as_json: bool, verbose: bool) -> None:
    """List snapshots."""
    out = Out("snapshot ls", as_json, verbose)

    def body() -> None:
        with Runtime() as rt:
            snaps = [s.to_json() for s in rt.snapshots.list()]
        if out.as_json:
            out.result(snaps)
            return
        print_table(["NAME", "ID", "BOX", "IMAGE", "SIZE", "USED BY", "CREATED"],
                    [[s["name"], s["id"][:12], s["box"], s["image"], human(s["size"]),
                      str(len(s["used_by"])), ago(s["created_at"])] for s in snaps])

    guarded(out, body)


@snapshot.command("inspect")
@click.argument("snap")
@common_options
def inspect_cmd(snap: str, as_json: bool, verbose: bool) -> None:
    """Everything known about a snapshot, as JSON."""
    out = Out("snapshot inspect", as_json, verbose)

    def body() -> None:
        import json

        with Runtime() as rt:
            data = rt.snapshots.get(snap).to_json()
        out.result(data, json.dumps(data, indent=2))

    guarded(out, body)


@snapshot.command("rm")
@click.argument("snap")
@click.option("-f", "--force", is_flag=True,
              help="Remove it even while boxes were restored from it (they keep working).")
@common_options
def rm_cmd(snap: str, force: bool, as_json: bool, verbose: bool) -> None:
    """Remove a snapshot."""
    out = Out("snapshot rm", as_json, verbose)

    def body() -> None:
        with Runtime() as rt:
            found = rt.snapshots.get(snap)
            rt.snapshots.remove(found.id, force)
        out.result({"id": found.id, "name": found.name}, found.name)

    guarded(out, body)


@snapshot.command("restore")
@click.argument("snap")
@click.option("--name", help="Name of the new box (also its hostname).")
@common_options
def restore_cmd(snap: str, name: str | None, as_json: bool, verbose: bool) -> None:
    """Start a new box from a snapshot; it goes on from the moment it was taken."""
    out = Out("snapshot restore", as_json, verbose)

    def body() -> None:
        with Runtime(log=out.log) as rt:
            box = rt.boxes.restore(snap, name=name)
        out.result(box.info().to_json(), box.name)

    guarded(out, body)


@click.command()
@click.argument("box")
@click.option("-n", "count", type=int, default=1, show_default=True, help="Clones to make.")
@click.option("--name-prefix", help="Clones are named PREFIX-1..N (default: BOX-fork).")
@common_options
def fork(box: str, count: int, name_prefix: str | None, as_json: bool, verbose: bool) -> None:
    """Make running clones of a running BOX, each its own machine, through a snapshot."""
    out = Out("fork", as_json, verbose)

    def body() -> None:
        with Runtime(log=out.log) as rt:
            clones = rt.boxes.get(box).fork(count, name_prefix=name_prefix)
        out.result([c.info().to_json() for c in clones], "\n".join(c.name for c in clones))

    guarded(out, body)
