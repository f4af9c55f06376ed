"""Image benchmark (issue 6): pulls from a registry on 127.0.0.1, each a fresh CLI.

    .venv/bin/python bench/images.py [--debian]

Figures:
  pull cold       3-layer ~50 MB image, empty store
  pull again      the same reference again (manifest checked, nothing made)
  pull cached     after `image rm`: layers cached, flattened and mke2fs'd again
  disk per box    bytes a new box of the image adds (its qcow2 overlay)
  run            `run --rm debian -- python3 -c 'print(1)'` against `run --rm busybox
                  -- true`, both --cold (the issue's target: within 1.5x) and both warm;
                  medians of 5, interleaved
  debian build    `image build debian --force` (network; with --debian)
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.oci import E, Layout
from tests.registry import busybox_layer, start

CLI = [sys.executable, "-m", "microbox"]


def timed(*args: str) -> float:
    t = time.monotonic()
    subprocess.run([*CLI, *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.monotonic() - t


def fifty_mb_image(root: Path) -> Path:
    """Three layers of ~17 MB each, half random (incompressible), half text."""
    layout = Layout(root)
    layers: list[list[E]] = []
    for i in range(3):
        files = busybox_layer() if i == 0 else []
        files.append(E(f"data{i}", "dir"))
        for j in range(8):
            files.append(E(f"data{i}/rand{j}", data=os.urandom(1 << 20)))
            files.append(E(f"data{i}/text{j}", data=(b"microbox %d %d\n" % (i, j)) * 70_000))
        layers.append(files)
    layout.tag(layout.image(layers, {"Cmd": ["sh"]}), "big")
    return root


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--debian", action="store_true", help="also time image build debian")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mbb-", dir="/tmp"))
    os.environ["MICROBOX_HOME"] = str(work / "home")
    reg = start(work / "registry")
    try:
        reg.push(fifty_mb_image(work / "layout"), "big", "bench/big:1")
        ref = f"{reg.host}/bench/big:1"
        cold = timed("image", "pull", ref)
        again = timed("image", "pull", ref)
        subprocess.run([*CLI, "image", "rm", ref], check=True, capture_output=True)
        cached = timed("image", "pull", ref)
        layers = sum(f.stat().st_size for f in (work / "home/images/layers/sha256").iterdir())
        out = subprocess.run([*CLI, "create", ref], check=True, capture_output=True, text=True)
        box = out.stdout.strip()
        disk = work / "home" / "boxes" / box / "disk.qcow2"
        per_box = disk.stat().st_blocks * 512
        subprocess.run([*CLI, "delete", box], check=True, capture_output=True)
        print(f"registry blobs: {layers / 1e6:.1f} MB in 3 layers + config")
        print(f"pull cold:      {cold:.2f} s")
        print(f"pull again:     {again:.2f} s")
        print(f"pull cached:    {cached:.2f} s   (target <= 1 s)")
        print(f"disk per box:   {per_box / 1024:.0f} KiB")
        for mode in ("--cold", "--rm"):  # --rm twice is harmless: warm is the default
            runs: dict[str, list[float]] = {"busybox": [], "debian": []}
            timed("run", "--rm", "debian", "--", "true")  # image in this store, template made
            timed("run", "--rm", "busybox", "--", "true")
            for _ in range(5):
                runs["busybox"].append(timed("run", "--rm", mode, "busybox", "--", "true"))
                runs["debian"].append(timed("run", "--rm", mode, "debian", "--", "python3",
                                            "-c", "print(1)"))
            b, d = statistics.median(runs["busybox"]), statistics.median(runs["debian"])
            kind = "cold" if mode == "--cold" else "warm"
            print(f"run {kind}:       busybox true {b:.2f} s, debian python3 {d:.2f} s "
                  f"({d / b:.2f}x)")
        if opts.debian:
            print(f"debian build:   {timed('image', 'build', 'debian', '--force'):.1f} s")
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
