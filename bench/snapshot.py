"""Warm start against cold boot, in one run (issue: snapshots and warm start).

    .venv/bin/python bench/snapshot.py [--runs 10] [--clones 50]

Figures (TCG on this machine unless KVM works):
  run      wall of `microbox run --rm busybox -- true` (a fresh CLI process),
           warm (restored from the template), --cold, and pooled (taking a box a
           pool of one kept ready: `pool add`; the pool full before each run),
           median and p95; then back to back, with the pool refilling behind
  ready    spawn of QEMU (for a pooled box: taking it) to the agent's handshake
           reply (identity applied), from -v
  fork     `microbox fork -n 10` of a running box, wall
  memory   Pss of one idle box's QEMU (/proc/PID/smaps_rollup), warm clone vs cold
           boot, 5 of each; and the total Pss of --clones idle warm clones
The cold figures are the floor: warm ones are printed as ratios to them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CLI = [sys.executable, "-m", "microbox"]
READY = re.compile(rb"agent ready after ([0-9.]+) s")
TOOK = b"took the spare"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def run_once(*flags: str, pooled: bool = False) -> tuple[float, float]:
    start = time.monotonic()
    p = subprocess.run([*CLI, "run", "--verbose", "--rm", *flags, "busybox", "--", "true"],
                       capture_output=True, check=True)
    wall = time.monotonic() - start
    if (TOOK in p.stderr) != pooled:
        raise RuntimeError(f"a {'pooled' if pooled else 'new'} box was wanted: {p.stderr!r}")
    ready = [float(m) for m in READY.findall(p.stderr)]
    return wall, ready[-1]


def pooled_once(rt: object) -> tuple[float, float]:
    """A run that takes the box of a full pool of one; the pool is removed after."""
    from microbox.sdk import Runtime

    assert isinstance(rt, Runtime)
    pool = rt.pools.add("busybox", size=1)
    try:
        return run_once(pooled=True)
    finally:
        rt.pools.remove(pool.id)


def back_to_back(rt: object, count: int) -> tuple[list[float], int]:
    """`count` runs one after another from a pool of one that refills behind
    them: their walls, and how many took a pooled box."""
    from microbox.sdk import Runtime

    assert isinstance(rt, Runtime)
    pool = rt.pools.add("busybox", size=1)
    walls, took = [], 0
    try:
        for _ in range(count):
            start = time.monotonic()
            p = subprocess.run([*CLI, "run", "--verbose", "--rm", "busybox", "--", "true"],
                               capture_output=True, check=True)
            walls.append(time.monotonic() - start)
            took += TOOK in p.stderr
    finally:
        rt.pools.remove(pool.id)
    return walls, took


def pss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no Pss for {pid}")


def idle_pss(rt: object, count: int, cold: bool) -> list[float]:
    from microbox.sdk import Runtime

    assert isinstance(rt, Runtime)
    boxes = [rt.boxes.run("busybox", cold=cold, rm=False, detach=True) for _ in range(count)]
    try:
        for b in boxes:
            b.run(["true"])
        time.sleep(2)  # let them go idle: the figure is of an idle box
        return [pss_mib(b.record.pid) for b in boxes if b.record.pid is not None]
    finally:
        for b in boxes:
            b.delete(force=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--clones", type=int, default=50)
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="mbs-", dir="/tmp")
    os.environ["MICROBOX_HOME"] = home
    from microbox.sdk import Runtime

    rows: list[tuple[str, str]] = []
    try:
        subprocess.run([*CLI, "image", "warm", "busybox"], check=True, capture_output=True)
        runs: dict[str, list[tuple[float, float]]] = {"warm": [], "cold": [], "pooled": []}
        with Runtime() as rt:
            for _ in range(args.runs):  # interleaved: drift hits all alike
                runs["warm"].append(run_once())
                runs["cold"].append(run_once("--cold"))
                runs["pooled"].append(pooled_once(rt))
            serial, took = back_to_back(rt, args.runs)
        cold_wall = statistics.median(w for w, _ in runs["cold"])
        cold_ready = statistics.median(r for _, r in runs["cold"])
        for kind, vals in runs.items():
            walls, readies = [w for w, _ in vals], [r for _, r in vals]
            rows.append((f"run --rm busybox -- true, {kind}",
                         f"{statistics.median(walls):.3f} s (p95 {pct(walls, .95):.3f})"
                         f"  {statistics.median(walls) / cold_wall:.2f}x cold"))
            rows.append((f"QEMU spawn to agent ready, {kind}",
                         f"{statistics.median(readies):.3f} s (p95 {pct(readies, .95):.3f})"
                         f"  {statistics.median(readies) / cold_ready:.2f}x cold"))
        rows.append(("run --rm busybox -- true, back to back",
                     f"{statistics.median(serial):.3f} s (p95 {pct(serial, .95):.3f}), "
                     f"{took} of {len(serial)} took a pooled box"))
        with Runtime() as rt:
            src = rt.boxes.run("busybox", name="fork-src", rm=False, detach=True)
            try:
                start = time.monotonic()
                clones = src.fork(10)
                rows.append(("fork -n 10 of a running box", f"{time.monotonic() - start:.3f} s"))
                for c in clones:
                    c.delete(force=True)
            finally:
                src.delete(force=True)
            warm = idle_pss(rt, 5, cold=False)
            cold = idle_pss(rt, 5, cold=True)
            rows.append(("idle box Pss, warm clone",
                         f"{statistics.median(warm):.1f} MiB  "
                         f"{statistics.median(warm) / statistics.median(cold):.2f}x cold"))
            rows.append(("idle box Pss, cold boot", f"{statistics.median(cold):.1f} MiB"))
            many = idle_pss(rt, args.clones, cold=False)
            rows.append((f"{len(many)} idle warm clones, total Pss", f"{sum(many):.0f} MiB"))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    for label, value in rows:
        print(f"{label:<44}{value}")


if __name__ == "__main__":
    main()
