"""`microbox cp SRC DST`: files and trees between the host and a box (Docker's
syntax); `microbox export BOX`: its root file system as a tar."""

from __future__ import annotations

import os
import sys

import click

from microbox.cli.common import common_options, guarded
from microbox.cli.output import Out
from microbox.cp.report import CopyReport
from microbox.sdk import Box, Runtime


def split_arg(arg: str) -> tuple[str | None, str]:
    """(box, path) for `BOX:PATH`, (None, path) for a host path, as Docker splits
    them: a path starting with / or . is the host's (write ./a:b for a host file
    named a:b)."""
    if arg.startswith(("/", ".")) or ":" not in arg:
        return None, arg
    box, _, path = arg.partition(":")
    return box, path


@click.command(context_settings={"allow_interspersed_args": False})
@common_options
@click.argument("src")
@click.argument("dst")
def cp(as_json: bool, verbose: bool, src: str, dst: str) -> None:
    """Copy files and trees between the host and a box: SRC or DST is BOX:PATH
    (Docker's syntax), the other a host path, or - for a tar stream on stdin
    (SRC) or stdout (DST). Modes, mtimes and symlinks are kept. A stopped box is
    started for the copy and stopped again."""
    out = Out("cp", as_json, verbose)
    (src_box, src_path), (dst_box, dst_path) = split_arg(src), split_arg(dst)
    if (src_box is None) == (dst_box is None):
        raise click.UsageError("one of SRC and DST must be BOX:PATH, the other a host path "
                               "or -")
    if not (dst_path if src_box is None else src_path):
        raise click.UsageError("the box path is empty; write BOX:/path")
    if dst == "-" and as_json:
        raise click.UsageError("--json cannot be combined with a tar stream on stdout")

    def body() -> None:
        with Runtime(log=out.log) as rt:
            box = rt.boxes.get(src_box or dst_box or "")
            try:
                if src_box is None:
                    report = (box.copy_in_tar(sys.stdin.buffer, dst_path) if src == "-"
                              else box.copy_in(src_path, dst_path))
                elif dst == "-":
                    report = box.copy_out_tar(src_path, sys.stdout.buffer)
                else:
                    report = box.copy_out(src_path, dst_path)
            finally:
                box.close()
            _tell(out, box.name, report)
            out.result(report.to_json())

    guarded(out, body)


def _tell(out: Out, name: str, report: CopyReport) -> None:
    if report.started:
        out.info(f"microbox: box '{name}' was not running; it was started for the copy "
                 "and stopped again")
    if report.skipped:
        out.info(f"microbox: left out {report.skipped} device, fifo, socket or other "
                 "special entr" + ("y" if report.skipped == 1 else "ies"))


@click.command()
@common_options
@click.option("-o", "--output", metavar="FILE",
              help="Write the tar to FILE (whole or not at all) instead of stdout.")
@click.argument("box")
def export(as_json: bool, verbose: bool, output: str | None, box: str) -> None:
    """Write BOX's root file system as a tar to stdout or FILE, as `docker export`
    does: the root disk only (/proc, /sys, /dev, /tmp, /run are empty dirs), with
    owners, modes, symlinks, hard links, devices and extended attributes. A
    stopped box is started for it and stopped again."""
    out = Out("export", as_json, verbose)
    to_stdout = output in (None, "-")
    if to_stdout and as_json:
        raise click.UsageError("--json cannot be combined with a tar on stdout; give -o FILE")
    if to_stdout and sys.stdout.isatty():
        raise click.UsageError("refusing to write a tar to a terminal; give -o FILE or "
                               "redirect the output")

    def body() -> None:
        with Runtime(log=out.log) as rt:
            handle = rt.boxes.get(box)
            try:
                report = (handle.export(sys.stdout.buffer) if to_stdout
                          else _export_file(handle, str(output)))
            finally:
                handle.close()
            _tell(out, handle.name, report)
            out.result({**report.to_json(), "output": None if to_stdout else output})

    guarded(out, body)


def _export_file(box: Box, path: str) -> CopyReport:
    """Export into a temporary name beside `path`, renamed over it once whole."""
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                       f".{os.path.basename(path)}.microbox-tmp")
    try:
        with open(tmp, "wb") as f:
            report = box.export(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return report
