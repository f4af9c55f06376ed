"""A randomized fault sweep (issue 23): kill things at random moments, then count
what is left.

    PYTHONPATH=src .venv/bin/python bench/faults.py SEED RUNS [--kinds k1,k2] [--home DIR]
                                                   [--no-calibrate]

Run N takes kind N mod the number of kinds (`faults.py 1 17`: one run of
each), in a fresh MICROBOX_HOME under a temp dir (~/.cache/microbox, with the
kernel and agent, is shared). It sets up what the kind needs, starts the
operation, and kills the target at a moment drawn from
random.Random(f"{SEED}/{N}"), uniform over a window that covers the
operation: 1.15 times its duration in one undisturbed control run of each
kind at start-up (whose findings are printed, not counted), or a built-in
window with --no-calibrate. The kinds:

  fork snapshot restore pool-add cp-in cp-out run-d first-run
      SIGKILL of that CLI command (`fork src -n 3`, `snapshot create`,
      `snapshot restore`, `pool add busybox -n 1`, `cp` of 50 MB either way,
      `run -d`, the first `run --rm` of a home: image build and template)
  filler      SIGKILL of a pool's filler (python -c "...pool.main()" POOL) a run started
  shim qemu   SIGKILL of src's shim or VMM during `exec src -- sleep 1`
  serve       SIGKILL of `serve --socket` during POST /boxes
  mcp         SIGKILL of `mcp` (the MCP SDK's stdio client) during create_box + fork_box
  rm-run      SIGKILL of an attached `run --rm -p PORT:80 ... sleep 1`
  rm-pooled   a pooled `run --rm` SIGSTOPped, its shim SIGKILLed, then the run
  full-disk   `snapshot create` onto a tmpfs over snapshots/ of a random size
  template    a template file (disk.qcow2, state, mem) overwritten or cut
              short, each in turn; the next warm `run --rm` must boot cold

Then the user's own commands settle, and their failures are findings:
`ls -a`; in each running box a QMP `query-status` (not `running` while the
database says running: "frozen box") and `exec BOX -- true` (a hang past 10 s:
"frozen box"); what that user would do next (retry `pool add`, `run --rm`,
look at the copied file); `gc`; `doctor` (a FAIL). An error whose --json
envelope has no `recovery` and whose message names no next step is "error
without recovery". A box attached to a killed process (`run --rm`, an MCP
server's) whose VMM still runs 3 s later, before any command, "outlived its
owner"; one still listed after `ls` and `gc` is "left". A box the user made
and never removed that is gone is "lost"; a pool below its size 20 s after
the user's next run is "short". Then `cleanup --all -f`, `pool rm` and `gc`,
and everything left is counted: VMMs, shims, fillers and other processes of
the home, database rows, box dirs, temp files (`.tmp-*`, `*.tmp`,
`*microbox-tmp*`, image staging, dot files in the copy destination), --net tap
pieces of its boxes, host ports it published, fork snapshots.

One line per run (seed, run, kind, kill moment, findings; their details
below it), then a table by kind and `FOUND N`. The exit code is 0 for a
completed sweep: it is a measurement. The sweep kills only processes it
started or that belong to its own homes (checked through a pidfd), bounds
every wait, unmounts what it mounted and removes its homes; anything of
them still running at the very end is killed and reported.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from faultkinds import (
    FIXED,
    KINDS,
    KINDS_TABLE,
    settle,
)
from faultlib import (
    Run,
    SetupFailed,
    _read,
    belongs,
    clean_up,
    count_left,
    kill_verified,
    processes,
    teardown,
    unmount,
)


def one_run(r: Run) -> None:
    try:
        KINDS_TABLE[r.kind][2](r)
        settle(r)
        clean_up(r)
        count_left(r)
    except SetupFailed as exc:
        r.find("harness: setup failed", str(exc))
    except Exception as exc:  # a bound hit (TimeoutExpired...): the sweep goes on
        r.find("harness: error", f"{exc!r}"[:300])
    finally:
        teardown(r)


def line(r: Run) -> str:
    types = Counter(k for k, _ in r.findings)
    found = ", ".join(f"{k} x{n}" if n > 1 else k for k, n in types.items()) or "none"
    run = "cal" if r.index < 0 else str(r.index)
    return f"seed {r.seed} run {run:>3} {r.kind:<10} {r.moment or '-'}  findings: {found}"


def sweep_leftovers(root: Path) -> list[str]:
    """Anything of the sweep's homes still running or mounted: killed, unmounted, named."""
    left = []
    for p in processes():
        if belongs(p, root) or (p.home or "").startswith(str(root) + "/"):
            left.append(f"pid {p.pid}: {' '.join(p.argv)[:160]}")
            kill_verified(p.pid, lambda q: belongs(q, root)
                          or (q.home or "").startswith(str(root) + "/"))
    for m in _read("/proc/self/mounts").decode().splitlines():
        point = m.split()[1]
        if point.startswith(str(root) + "/"):
            left.append(f"mount {point}")
            unmount(Path(point))
    return left


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("seed", type=int)
    ap.add_argument("runs", type=int)
    ap.add_argument("--kinds", help=f"comma-separated, of: {','.join(KINDS)}")
    ap.add_argument("--home", default="/tmp",
                    help="make the runs' temp homes under this dir (keep it short: they "
                         "hold Unix sockets)")
    ap.add_argument("--no-calibrate", action="store_true",
                    help="use built-in windows instead of one control run of each kind")
    args = ap.parse_args()
    kinds = args.kinds.split(",") if args.kinds else KINDS
    unknown = [k for k in kinds if k not in KINDS_TABLE]
    if unknown:
        ap.error(f"unknown kinds {unknown}; known: {','.join(KINDS)}")
    if os.geteuid() != 0 and "full-disk" in kinds:
        ap.error("full-disk mounts a tmpfs: run as root, or leave it out with --kinds")
    root = Path(tempfile.mkdtemp(prefix="mbfault-", dir=args.home))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    windows = {k: KINDS_TABLE[k][1] for k in kinds}
    controls = 0
    done: list[Run] = []
    leftovers: list[str] = []
    started = time.monotonic()
    try:
        if not args.no_calibrate:
            for kind in kinds:
                if kind in FIXED:
                    continue
                cal = Run(args.seed, -1, kind, root, windows[kind], calibrating=True,
                          slot=KINDS.index(kind))
                one_run(cal)
                if kind == "full-disk":
                    windows[kind] = cal.size_needed * 1.2 or windows[kind]
                elif cal.measured:
                    windows[kind] = cal.measured * 1.15 + 0.05
                controls += len(cal.findings)
                print(f"{line(cal)}  -> window {windows[kind]:.2f}", flush=True)
                for kind_, detail in cal.findings:
                    print(f"      {kind_}: {detail}", flush=True)
        for i in range(args.runs):
            kind = kinds[i % len(kinds)]
            r = Run(args.seed, i, kind, root, windows[kind], nth=i // len(kinds))
            one_run(r)
            done.append(r)
            print(line(r), flush=True)
            for kind_, detail in r.findings:
                print(f"      {kind_}: {detail}", flush=True)
            for note in r.notes:
                print(f"      (note) {note}", flush=True)
    finally:
        leftovers = sweep_leftovers(root)
        shutil.rmtree(root, ignore_errors=True)
    for item in leftovers:
        print(f"left after the sweep (killed): {item}")
    table(done, kinds)
    total = sum(len(r.findings) for r in done) + len(leftovers)
    hit = sum(1 for r in done if r.findings)
    print(f"\nFOUND {total} finding(s) in {hit} of {len(done)} runs "
          f"(seed {args.seed}, {time.monotonic() - started:.0f}s)")
    if controls:
        print(f"(and {controls} in the control runs, which had no fault: defects without a "
              "fault, or the harness's own noise)")


def table(done: list[Run], kinds: list[str]) -> None:
    print(f"\n{'kind':<10} | {'runs':>4} | {'with a finding':>14} | findings by type")
    print(f"{'-' * 10}-+-{'-' * 4}-+-{'-' * 14}-+-{'-' * 40}")
    for kind in kinds:
        runs = [r for r in done if r.kind == kind]
        if not runs:
            continue
        types = Counter(k for r in runs for k, _ in r.findings)
        found = ", ".join(f"{k} {n}" for k, n in types.most_common()) or "-"
        print(f"{kind:<10} | {len(runs):>4} | {sum(1 for r in runs if r.findings):>14} | "
              f"{found}")


if __name__ == "__main__":
    main()

