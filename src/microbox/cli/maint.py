"""Housekeeping: cleanup, kill, gc, doctor."""

from __future__ import annotations

import sys

import click

from microbox.cli.common import common_options, guarded
from microbox.cli.output import Out, envelope
from microbox.cli.render import print_table
from microbox.errors import HostError, Refused
from microbox.sdk import Runtime


def _confirm(out: Out, question: str, what: str) -> bool:
    """Ask on a terminal; refuse (exit 1) where nobody can answer."""
    if out.as_json or not sys.stdin.isatty():
        raise Refused(f"refusing to {what} without confirmation", "the same command with --force")
    return click.confirm(question, default=False, err=True)


@click.command()
@click.option("--all", "include_running", is_flag=True, help="Running boxes too.")
@click.option("-f", "--force", is_flag=True, help="Do not ask.")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@common_options
def cleanup(include_running: bool, force: bool, dry_run: bool, as_json: bool,
            verbose: bool) -> None:
    """Delete stopped and crashed boxes (--all: every box)."""
    out = Out("cleanup", as_json, verbose)

    def body() -> None:
        with Runtime(log=out.log) as rt:
            doomed = rt.boxes.cleanup_candidates(include_running)
            names = [f"{r.name} ({r.id[:12]}, {r.status})" for r in doomed]
            if not doomed:
                out.result({"deleted": [], "dry_run": dry_run}, "nothing to clean up")
                return
            if not out.as_json:
                click.echo(f"{'would delete' if dry_run else 'will delete'} {len(doomed)} "
                           f"box{'es' if len(doomed) != 1 else ''}:", err=True)
                for n in names:
                    click.echo(f"  {n}", err=True)
            if dry_run:
                out.result({"deleted": [], "would_delete": [r.id for r in doomed],
                            "dry_run": True})
                return
            if not force and not _confirm(out, "delete them?", f"delete {len(doomed)} boxes"):
                out.info("nothing deleted")
                return
            out.result({"deleted": rt.boxes.cleanup(doomed), "dry_run": False},
                       f"deleted {len(doomed)}")

    guarded(out, body)


@click.command()
@click.option("-f", "--force", is_flag=True, help="Do not ask.")
@common_options
@click.argument("box")
def kill(force: bool, as_json: bool, verbose: bool, box: str) -> None:
    """SIGKILL a box's VMM, found from /proc by the box's id or a unique prefix
    of it (works without the database), or by its name."""
    out = Out("kill", as_json, verbose)

    def body() -> int:
        rt = Runtime()
        target = rt.host.find_vmm(box)
        question = f"kill box {target.box_id[:12]} (VMM pid {target.pid})?"
        if not force and not _confirm(out, question, f"kill box {target.box_id[:12]}"):
            out.info("nothing killed")
            return 0
        rt.host.kill_vmm(target)
        out.result({"id": target.box_id, "pid": target.pid},
                   f"killed {target.box_id[:12]} (pid {target.pid})")
        return 0

    guarded(out, body)


@click.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@common_options
def gc(dry_run: bool, as_json: bool, verbose: bool) -> None:
    """Remove leftovers no live box owns: dead --rm boxes, stray box dirs,
    unused templates and snapshots, shims that outlived their VM, and (as root)
    --net tap namespaces, links and nftables chains whose box is gone."""
    out = Out("gc", as_json, verbose)

    def body() -> None:
        with Runtime(log=out.log) as rt:
            report = rt.host.gc(dry_run)
        verb = "would remove" if dry_run else "removed"
        lines = [f"{verb} box {i[:12]} (its owner died)" for i in report.rows]
        lines += [f"{verb} dir {d}" for d in report.dirs]
        lines += [f"{verb} template {t}" for t in report.templates]
        lines += [f"{verb} snapshot {t}" for t in report.snapshots]
        lines += [f"{'would end' if dry_run else 'ended'} shim pid {p} (its VM is gone)"
                  for p in report.shims]
        lines += [f"{verb} {n}" for n in report.networks]
        lines += [f"{verb} {d} (a killed pull, build or volume create's work)"
                  for d in report.staging]
        out.result({"rows": report.rows, "dirs": report.dirs, "templates": report.templates,
                    "snapshots": report.snapshots, "shims": report.shims,
                    "networks": report.networks, "staging": report.staging,
                    "dry_run": dry_run},
                   "\n".join(lines) or "nothing to collect")

    guarded(out, body)


@click.command()
@common_options
def doctor(as_json: bool, verbose: bool) -> None:
    """Check the host, read-only; every FAIL names its fix."""
    out = Out("doctor", as_json, verbose)

    def body() -> int:
        checks = Runtime().host.doctor()
        failed = any(c.status == "FAIL" for c in checks)
        if out.as_json:
            fails = [c for c in checks if c.status == "FAIL"]
            err = HostError(f"{len(fails)} checks failed: {', '.join(c.name for c in fails)}",
                            fails[0].fix) if fails else None
            envelope("doctor", int(failed), [c.__dict__ for c in checks], err)
            return int(failed)
        colour = {"PASS": "green", "WARN": "yellow", "FAIL": "red"}
        print_table(["CHECK", "STATUS", "DETAIL"], [
            [c.name, f"[{colour[c.status]}]{c.status}[/]",
             c.detail + (f"\n→ fix: {c.fix}" if c.fix else "")] for c in checks])
        return int(failed)

    guarded(out, body)
