"""`microbox build` against the same steps done by hand, in one run (issue:
images from Dockerfiles).

    .venv/bin/python bench/build.py [--runs 3]

The Dockerfile has six steps: FROM debian, ENV, WORKDIR, COPY of a small
tree (50 files), RUN of a shell loop, CMD. Figures, median of --runs:
  sdk      the floor: the same steps through the SDK in one process, making
           no image: a box of debian, mkdir, copy the tree in, run the loop,
           delete the box
  hand     the same through the CLI a user would type (a process a step):
           `run -d debian`, `exec mkdir`, `cp` the tree in, `exec` the loop,
           `rm -f`; and `hand+commit`, with `commit` (ENV, WORKDIR, CMD as
           --change) before the rm, which makes the image the build makes
  cold     `build --no-cache` (every step runs; the debian template is warm,
           as it is for the others)
  cached   `build` again, nothing changed: every step a cache hit
Printed: the seconds of each, cold's overhead over each floor, cached's wall.
Targets: cached under 1 s; cold's overhead over the hand steps under 20 %.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-m", "microbox"]
LOOP = "i=0; while [ $i -lt 200 ]; do echo $i >> /app/out; i=$((i+1)); done"
DOCKERFILE = f"""\
FROM debian
ENV MODE=bench
WORKDIR /app
COPY tree/ /app/tree/
RUN {LOOP}
CMD ["cat", "/app/out"]
"""


def mb(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *args], capture_output=True, check=True)


def timed(fn: object, *args: str) -> float:
    start = time.monotonic()
    fn(*args)  # type: ignore[operator]
    return time.monotonic() - start


def by_hand(ctx: str, commit: str = "") -> None:
    box = "bench-hand"
    mb("run", "-d", "--name", box, "-e", "MODE=bench", "debian", "--", "sleep", "3600")
    try:
        mb("exec", box, "--", "mkdir", "-p", "/app")
        mb("cp", f"{ctx}/tree", f"{box}:/app/tree")
        mb("exec", box, "--", "/bin/sh", "-c", LOOP)
        if commit:
            mb("commit", box, "bench-hand:latest", "-c", "ENV MODE=bench", "-c",
               "WORKDIR /app", "-c", 'CMD ["cat", "/app/out"]')
    finally:
        subprocess.run([*CLI, "rm", "-f", box], capture_output=True)


def by_sdk(ctx: str) -> None:
    from microbox.sdk import Runtime

    with Runtime() as rt, rt.boxes.run("debian", env={"MODE": "bench"}) as box:
        box.run(["mkdir", "-p", "/app"])
        box.copy_in(f"{ctx}/tree", "/app/tree")
        box.run(["/bin/sh", "-c", LOOP])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    home = tempfile.mkdtemp(prefix="mbb-", dir="/tmp")
    os.environ["MICROBOX_HOME"] = home
    ctx = Path(home) / "ctx"
    for i in range(50):
        f = ctx / "tree" / f"d{i % 5}" / f"f{i}.txt"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"file {i}\n" * 20)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    try:
        mb("image", "build", "debian")
        mb("image", "warm", "debian")  # both sides start from the warm template
        mb("build", "-t", "bench-built", str(ctx))  # the unsalted cache, for `cached`
        runs: dict[str, list[float]] = {k: [] for k in ("sdk", "hand", "hand+commit", "cold",
                                                         "cached")}
        for _ in range(opts.runs):  # interleaved: drift hits every figure alike
            runs["sdk"].append(timed(by_sdk, str(ctx)))
            runs["hand"].append(timed(by_hand, str(ctx)))
            runs["hand+commit"].append(timed(by_hand, str(ctx), "commit"))
            runs["cold"].append(timed(mb, "build", "--no-cache", "-t", "bench-built",
                                      str(ctx)))
            runs["cached"].append(timed(mb, "build", "-t", "bench-built", str(ctx)))
        med = {k: statistics.median(v) for k, v in runs.items()}
        for k, v in runs.items():
            print(f"{k:12} {med[k]:6.2f} s  runs {[round(x, 2) for x in v]}")
        for floor in ("sdk", "hand", "hand+commit"):
            print(f"cold over {floor:12} {100 * (med['cold'] / med[floor] - 1):+4.0f} %"
                  + ("  (target < 20 %)" if floor == "hand" else ""))
        print(f"cached {med['cached']:.2f} s  (target < 1 s)")
    finally:
        subprocess.run([*CLI, "gc"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
