"""`microbox workspace push|export`: thin over the SDK's workspaces."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from microbox.agent.protocol import wire
from microbox.cli.common import common_options, guarded
from microbox.cli.output import Out
from microbox.images.progress import human
from microbox.sdk import Runtime
from microbox.workspace import DEFAULT_DEST, workspace_files
from microbox.workspace.guest import check_dest

_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def shown(path: str) -> str:
    """A path on one line, quoted as git quotes names it cannot print (newlines,
    control characters, bytes that are not UTF-8); other names as they are."""
    if path.isprintable() and '"' not in path and "\\" not in path:
        return path
    out = []
    for ch in path:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            out.extend(f"\\{b:03o}" for b in ch.encode("utf-8", "surrogateescape"))
    return '"' + "".join(out) + '"'


@click.group()
def workspace() -> None:
    """Ship a git repository into a box; bring what changed there back as a patch."""


@workspace.command("push")
@click.argument("box")
@click.argument("path", required=False, default=".", type=click.Path(file_okay=False))
@click.option("--dest", default=DEFAULT_DEST, show_default=True,
              help="The repository's directory in the box.")
@click.option("--include-untracked", is_flag=True,
              help="Ship untracked files too (those git does not ignore).")
@click.option("--dry-run", is_flag=True,
              help="List the files that would go, one per line; needs no box.")
@common_options
def push_cmd(box: str, path: str, dest: str, include_untracked: bool, dry_run: bool,
             as_json: bool, verbose: bool) -> None:
    """Ship the tracked files of the git repository holding PATH (default: here),
    as they are in its work tree, into BOX and commit them there as the base
    that `workspace export` compares with. Pushing again replaces the tree."""
    out = Out("workspace push", as_json, verbose)

    def body() -> None:
        where = check_dest(dest)
        if dry_run:
            files = workspace_files(path, include_untracked)
            total = sum(f.size for f in files)
            if out.as_json:
                out.result({"dry_run": True, "dest": wire(where), "bytes": total,
                            "files": [f.to_json() for f in files]})
                return
            for f in files:
                click.echo(shown(f.path))
            out.info(f"{len(files)} files ({human(total)}) would go to {box}:{where}; "
                     "nothing was pushed (--dry-run)")
            return
        with Runtime(log=out.log) as rt:
            handle = rt.boxes.get(box)
            try:
                report = handle.workspace_push(path, where, include_untracked)
            finally:
                handle.close()
        gone = f", {report.removed} removed" if report.removed else ""
        out.result(report.to_json(), f"{report.files} files ({human(report.bytes)}{gone}) in "
                                     f"{box}:{where}, base {report.base[:12]}")

    guarded(out, body)


@workspace.command("export")
@click.argument("box")
@click.option("-o", "--output", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the patch to FILE (whole or not at all), not to stdout.")
@click.option("--dest", default=DEFAULT_DEST, show_default=True,
              help="The repository's directory in the box (as pushed).")
@common_options
def export_cmd(box: str, output: str | None, dest: str, as_json: bool, verbose: bool) -> None:
    """Print a binary patch of everything that changed in BOX's workspace since
    the push (commits, staged, unstaged and new files); `git apply` it at the
    top of the host repository. The repository in the box is left as it was."""
    out = Out("workspace export", as_json, verbose)

    def body() -> None:
        with Runtime(log=out.log) as rt:
            handle = rt.boxes.get(box)
            try:
                patch = handle.workspace_export(check_dest(dest))
            finally:
                handle.close()
        if output is not None:
            _write_whole(Path(output), patch)
        if out.as_json:
            text = None if output else wire(patch.decode("utf-8", "surrogateescape"))
            out.result({"bytes": len(patch), "output": output, "patch": text})
            return
        if output is None:
            sys.stdout.buffer.write(patch)
            sys.stdout.flush()
        if not patch:
            out.info(f"nothing changed in {box}:{dest} since the push")
        elif output is not None:
            out.info(f"{output} ({human(len(patch))})")

    guarded(out, body)


def _write_whole(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.microbox-tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
