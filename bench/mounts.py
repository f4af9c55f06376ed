"""Host folders (`-v`, virtio-9p) against the box's own disk and the host
itself, in one run (issue: the user's world reaches the box).

    .venv/bin/python bench/mounts.py [--files 10000] [--mib 100] [--runs 3]

In a `debian` box with a host folder mounted at /mnt/host, and on the host:
  write    dd of a --mib file (bs 1M, conv=fsync), MB/s
  read     dd of it back (the box's page cache dropped first; the host's too
           when root), MB/s
  find     `find . | wc -l` over a tree of --files small files
  status   `git status --porcelain` in that tree (a committed git repository)
Each where it is: the host folder from the box (as it is, and mounted again
with `:cached`), the box's own disk (a copy of the same tree), and the host.
Median of --runs; ratios to the host.
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

MOUNT = "/mnt/host"
CACHED = "/mnt/cached"  # the same folder, -v ...:cached (cache=loose in the box)
WHERE = ("mount", "cached", "box disk", "host")


def make_tree(root: Path, files: int) -> None:
    for i in range(files):
        d = root / f"d{i % 100:02d}" / f"e{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file {i}\n")
    git = ["git", "-C", str(root), "-c", "user.name=b", "-c", "user.email=b@b"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "tree"], check=True)


def sh_host(script: str, cwd: Path) -> float:
    start = time.monotonic()
    subprocess.run(["/bin/sh", "-c", script], cwd=cwd, check=True, capture_output=True)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    home = tempfile.mkdtemp(prefix="mbm-", dir="/tmp")
    os.environ["MICROBOX_HOME"] = home
    from microbox.sdk import Runtime

    host = Path(home) / "shared"
    (host / "tree").mkdir(parents=True)
    make_tree(host / "tree", opts.files)
    dd_w = f"dd if=/dev/zero of=big bs=1M count={opts.mib} conv=fsync 2>&1"
    dd_r = "dd if=big of=/dev/null bs=1M 2>&1"
    drop = "sync; echo 3 > /proc/sys/vm/drop_caches"
    figures: dict[str, dict[str, list[float]]] = {}

    def note(where: str, what: str, value: float) -> None:
        figures.setdefault(what, {}).setdefault(where, []).append(value)

    try:
        with Runtime() as rt, rt.boxes.run("debian", memory_mib=512, mounts=[
                f"{host}:{MOUNT}", f"{host}:{CACHED}:cached"]) as box:
            r = box.run(["/bin/sh", "-c", f"cp -a {MOUNT}/tree /root/tree"])
            assert r.exit_code == 0, r.stderr

            def in_box(script: str, cwd: str) -> tuple[float, str]:
                start = time.monotonic()
                r = box.run(["/bin/sh", "-c", script], cwd=cwd)
                assert r.exit_code == 0, r.stderr
                return time.monotonic() - start, r.stdout.decode()

            for _ in range(opts.runs):
                for where, cwd in (("mount", MOUNT), ("cached", CACHED), ("box disk", "/root")):
                    t, _ = in_box(dd_w, cwd)
                    note(where, "write MB/s", opts.mib * 1.048576 / t)
                    in_box(drop, "/")
                    t, _ = in_box(dd_r, cwd)
                    note(where, "read MB/s", opts.mib * 1.048576 / t)
                    in_box("rm -f big", cwd)
                    note(where, "find s", in_box("find . | wc -l", f"{cwd}/tree")[0])
                    note(where, "status s", in_box("git -c safe.directory='*' status "
                                                   "--porcelain", f"{cwd}/tree")[0])
                note("host", "write MB/s", opts.mib * 1.048576 / sh_host(dd_w, host))
                if os.geteuid() == 0:
                    sh_host(drop, host)
                note("host", "read MB/s", opts.mib * 1.048576 / sh_host(dd_r, host))
                (host / "big").unlink()
                note("host", "find s", sh_host("find . | wc -l", host / "tree"))
                note("host", "status s", sh_host("git status --porcelain", host / "tree"))
        print(f"{opts.files} files, {opts.mib} MiB; median of {opts.runs}; "
              "ratio: to the host")
        print(f"{'':12}" + "".join(f"{w:>22}" for w in WHERE))
        for what, by in figures.items():
            base = statistics.median(by["host"])
            cells = []
            for where in WHERE:
                v = statistics.median(by[where])
                cells.append(f"{v:10.2f} ({v / base:5.2f}x)")
            print(f"{what:12}" + "".join(f"{c:>22}" for c in cells))
    finally:
        subprocess.run([sys.executable, "-m", "microbox", "gc"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)



if __name__ == "__main__":
    main()
