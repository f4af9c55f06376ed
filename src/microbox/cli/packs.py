"""`microbox pack ...`: write an image or a box to one portable file, check one.
`create --from FILE` and `run --from FILE` make boxes of a pack (cli/boxes.py, run.py)."""

from __future__ import annotations

import json
import sys

import click

from microbox.cli.common import common_options, guarded
from microbox.cli.output import Out
from microbox.cli.progress import CliProgress
from microbox.errors import Refused
from microbox.images.progress import human
from microbox.sdk import LIVE, Box, PackInfo, Runtime


@click.group()
def pack() -> None:
    """Packs: an image or a box in one portable, checksummed file."""


def _summary(info: PackInfo) -> str:
    d = info.disk
    return (f"{info.path} ({human(info.size)}; a {human(d['size'])} disk holding "
            f"{human(d['data_bytes'])})")


@pack.command("create")
@click.option("--image", "image", metavar="IMG", help="Pack this image (built or pulled if "
              "missing).")
@click.option("--from-box", "box", metavar="BOX", help="Pack this box: its disk as it is now, "
              "its image's config and its spec.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The pack file to write (replaced if it exists).")
@click.option("--stop", is_flag=True, help="Stop a running box without asking (it stays "
              "stopped).")
@common_options
def create_cmd(image: str | None, box: str | None, output: str, stop: bool, as_json: bool,
               verbose: bool) -> None:
    """Write one portable file of an image (--image) or a box (--from-box): the disk,
    the image config, the box spec, and the kernel and agent it was made with."""
    out = Out("pack create", as_json, verbose)
    if (image is None) == (box is None):
        raise click.UsageError("give one of --image IMG or --from-box BOX")

    def body() -> None:
        with Runtime(log=out.log) as rt, CliProgress(out) as progress:
            if image is not None:
                info = rt.images.pack(image, output, progress=progress)
            else:
                assert box is not None
                info = _pack_box(out, rt.boxes.get(box), output, stop, progress)
        out.result(info.to_json(), _summary(info))

    guarded(out, body)


def _pack_box(out: Out, handle: Box, output: str, stop: bool,
              progress: CliProgress) -> PackInfo:
    was = handle.status
    if was in LIVE and not stop and not out.as_json and sys.stdin.isatty():
        if not click.confirm(f"box '{handle.name}' is {was}; stop it to pack it?",
                             default=False, err=True):
            raise Refused(f"nothing was packed: box '{handle.name}' is still {was}")
        stop = True
    info = handle.pack(output, stop=stop, progress=progress)  # refuses, naming --stop
    if was in LIVE:
        out.info(f"box '{handle.name}' was stopped to pack it; 'microbox start "
                 f"{handle.name}' starts it again")
    return info


@pack.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False))
@common_options
def inspect_cmd(file: str, as_json: bool, verbose: bool) -> None:
    """Check a pack whole (every checksum) and print its manifest; changes nothing."""
    out = Out("pack inspect", as_json, verbose)

    def body() -> None:
        with CliProgress(out) as progress:
            info = Runtime().images.inspect_pack(file, progress=progress)
        data = info.to_json()
        out.result(data, json.dumps(data, indent=2))

    guarded(out, body)
