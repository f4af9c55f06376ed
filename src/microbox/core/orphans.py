"""Finding box VMMs from /proc alone, so `kill`, `gc` and `doctor` work with the
database gone or corrupt."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from microbox import paths
from microbox.errors import NotFound, UsageError
from microbox.vmm import process

_DISK = re.compile(r"file=(?P<dir>/.+/(?P<id>[0-9a-f]{32}))/disk\.qcow2(?:,|$)")


@dataclass(frozen=True)
class VMM:
    pid: int
    started: float
    box_id: str
    box_dir: Path


def scan(boxes_dir: Path | None = None) -> list[VMM]:
    """Every QEMU process running a box under `boxes_dir` (default: this MICROBOX_HOME)."""
    import psutil  # here, not at the top: only gc and doctor need it
    root = (boxes_dir or paths.boxes_dir()).resolve()
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            argv = p.info["cmdline"] or []
        except psutil.Error:
            continue
        if not argv or "qemu-system" not in Path(argv[0]).name:
            continue
        for arg in argv:
            m = _DISK.search(arg)
            if m and Path(m["dir"]).parent.resolve() == root:
                started = process.start_time(p.pid)  # None: it exited meanwhile
                if started is not None:
                    found.append(VMM(p.pid, started, m["id"], Path(m["dir"])))
                break
    return found


@dataclass(frozen=True)
class Shim:
    pid: int
    box_dir: Path


def stray_shims(boxes_dir: Path | None = None) -> list[Shim]:
    """Box shims (docs/architecture.md) whose VM is gone: a shim exits with its
    VM, so one that did not is stuck, and `gc` ends it."""
    import psutil  # here, not at the top: only gc and doctor need it

    from microbox.core.boxdir import BoxDir

    root = (boxes_dir or paths.boxes_dir()).resolve()
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            argv = p.info["cmdline"] or []
        except psutil.Error:
            continue
        if not argv or Path(argv[0]).name != "microbox-shim" or "-dir" not in argv[:-1]:
            continue
        d = Path(argv[argv.index("-dir") + 1])
        if d.parent.resolve() == root and not BoxDir(d).alive():
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue  # dead already; its parent reaps it
            except psutil.Error:
                continue
            found.append(Shim(p.pid, d))
    return found


def match(vmms: list[VMM], ref: str) -> VMM:
    """The VMM whose box id is `ref` or starts with it, uniquely."""
    hits = [v for v in vmms if v.box_id == ref] or [v for v in vmms if v.box_id.startswith(ref)]
    if not ref or not hits:
        raise NotFound(f"no running box VMM has an id starting with {ref!r}", "microbox list")
    if len(hits) > 1:
        ids = ", ".join(v.box_id[:12] for v in hits)
        raise UsageError(f"the id prefix {ref!r} matches {len(hits)} VMMs: {ids}; "
                         "give more characters")
    return hits[0]
