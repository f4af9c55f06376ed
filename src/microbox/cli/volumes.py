"""`microbox volume ...`: named volumes, disks that outlive boxes; thin over rt.volumes."""

from __future__ import annotations

import json

import click

from microbox.cli.common import common_options, guarded
from microbox.cli.output import Out
from microbox.cli.render import ago, print_table
from microbox.images.progress import human
from microbox.sdk import Runtime


@click.group()
def volume() -> None:
    """Named volumes: ext4 disks that outlive boxes (`run -v NAME:/data`)."""


@volume.command("create")
@click.argument("name")
@click.option("--size", default="10G", show_default=True,
              help="Its size (sparse: disk is used only as it fills), e.g. 512M, 10G.")
@common_options
def create_cmd(name: str, size: str, as_json: bool, verbose: bool) -> None:
    """Make an empty volume NAME (`run -v NAME:/path` also makes a missing one)."""
    out = Out("volume create", as_json, verbose)

    def body() -> None:
        with Runtime() as rt:
            vol = rt.volumes.create(name, size=size)
        out.result(vol.to_json(), vol.name)

    guarded(out, body)


@volume.command("ls")
@common_options
def ls_cmd(as_json: bool, verbose: bool) -> None:
    """List volumes, their size, the disk they use and the boxes that mount them."""
    out = Out("volume ls", as_json, verbose)

    def body() -> None:
        with Runtime() as rt:
            found = [(v, rt.volumes.users(v.name)) for v in rt.volumes.list()]
        if out.as_json:
            out.result([{**v.to_json(), "boxes": users} for v, users in found])
            return
        print_table(["NAME", "SIZE", "USED", "BOXES", "CREATED"],
                    [[v.name, human(v.size), human(v.used_bytes), ",".join(users) or "-",
                      ago(v.created_at)] for v, users in found])

    guarded(out, body)


@volume.command("inspect")
@click.argument("name")
@common_options
def inspect_cmd(name: str, as_json: bool, verbose: bool) -> None:
    """Everything known about a volume, as JSON."""
    out = Out("volume inspect", as_json, verbose)

    def body() -> None:
        with Runtime() as rt:
            data = {**rt.volumes.get(name).to_json(), "boxes": rt.volumes.users(name)}
        out.result(data, json.dumps(data, indent=2))

    guarded(out, body)


@volume.command("rm")
@click.argument("names", nargs=-1, required=True)
@common_options
def rm_cmd(names: tuple[str, ...], as_json: bool, verbose: bool) -> None:
    """Remove volumes no box mounts (their data goes with them)."""
    out = Out("volume rm", as_json, verbose)

    def body() -> None:
        with Runtime() as rt:
            gone = [rt.volumes.remove(n).name for n in names]
        out.result(gone, "\n".join(gone))

    guarded(out, body)
