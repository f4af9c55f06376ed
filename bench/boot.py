"""Boot and exec benchmark (issue: foundation). Prints figures and ratios to the floor.

    make bench            # or: .venv/bin/python bench/boot.py --runs 10

Figures, each over --runs runs (median, p95), of cold boots (--cold: the floor
boots too; bench/snapshot.py measures warm starts against cold ones):
  run      wall time of `microbox run --rm --cold busybox -- true` (a fresh CLI process)
  ready    time from spawning QEMU to the agent's handshake reply
  exec     round trip of `true` in a running box, 100 times (p50, p95)
  floor    raw QEMU with the same kernel and machine, a busybox /init that prints
           one line: time to that line. The other figures are shown as ratios to it.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from microbox.artifacts.initramfs import Entry, archive
from microbox.core import vm
from microbox.core.boxdir import PORTS
from microbox.sdk import Runtime
from microbox.vmm import tsc
from microbox.vmm.qemu_argv import kernel_cmdline

FLOOR_LINE = b"microbox-floor-ready"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def floor_initramfs(dest: Path) -> None:
    busybox = Path("/bin/busybox").read_bytes()
    init = b"#!/bin/busybox sh\n/bin/busybox echo " + FLOOR_LINE + b"\n/bin/busybox sleep 60\n"
    dest.write_bytes(archive([
        Entry("dev", stat.S_IFDIR | 0o755),
        Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        Entry("bin", stat.S_IFDIR | 0o755),
        Entry("bin/busybox", stat.S_IFREG | 0o755, busybox),
        Entry("init", stat.S_IFREG | 0o755, init),
    ]))


def floor_once(qemu: str, vmlinux: Path, initrd: Path) -> float:
    argv = [qemu, "-M", "microvm,acpi=off,x-option-roms=off,isa-serial=on",
            "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "256M", "-nodefaults",
            "-no-user-config", "-nographic", "-no-reboot", "-kernel", str(vmlinux),
            "-initrd", str(initrd), "-append", kernel_cmdline("tcg", 1, tsc.host_tsc_khz()),
            "-serial", "stdio"]
    start = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    assert p.stdout is not None
    seen = b""
    try:
        while FLOOR_LINE not in seen:
            ready, _, _ = select.select([p.stdout], [], [], 30)
            if not ready:
                raise RuntimeError("the floor guest printed nothing for 30 s")
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("the floor guest exited before printing its line")
            seen += chunk
        return time.monotonic() - start
    finally:
        p.kill()
        p.wait()


def run_once(cli: list[str]) -> float:
    start = time.monotonic()
    subprocess.run([*cli, "run", "--rm", "--cold", "busybox", "--", "true"], check=True)
    return time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--execs", type=int, default=100)
    args = ap.parse_args()
    qemu = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
    cli = [str(Path(sys.executable).with_name("microbox"))]
    home = tempfile.mkdtemp(prefix="mbb-", dir="/tmp")
    os.environ["MICROBOX_HOME"] = home
    try:
        with tempfile.TemporaryDirectory() as tmp:
            initrd = Path(tmp) / "floor.cpio"
            floor_initramfs(initrd)
            floors = [floor_once(qemu, vm.default_kernel(), initrd) for _ in range(args.runs)]
        run_once(cli)  # warm-up: builds the busybox image into this MICROBOX_HOME
        runs = [run_once(cli) for _ in range(args.runs)]
        readies: list[float] = []
        execs: list[float] = []
        with Runtime() as rt:
            for i in range(args.runs):
                with rt.boxes.run("busybox", accel="tcg", cold=True) as box:
                    readies.append(box.ready_after)
                    if i == 0:
                        for _ in range(args.execs):
                            t = time.monotonic()
                            box.run(["true"])
                            execs.append(time.monotonic() - t)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    floor = statistics.median(floors)
    print(f"{'figure':<44}{'median':>10}{'p95':>10}{'x floor':>10}")
    rows = [
        ("floor: raw QEMU + kernel to first line", floors),
        ("run --rm --cold busybox -- true (wall)", runs),
        ("QEMU spawn to agent handshake", readies),
    ]
    for label, values in rows:
        med = statistics.median(values)
        print(f"{label:<44}{med:>9.3f}s{pct(values, 0.95):>9.3f}s{med / floor:>10.2f}")
    print(f"{'handshake minus floor':<44}{statistics.median(readies) - floor:>9.3f}s")
    print(f"{f'exec round trip of true (x{len(execs)})':<44}"
          f"{statistics.median(execs) * 1000:>8.2f}ms{pct(execs, 0.95) * 1000:>8.2f}ms")
    print(f"vmlinux {vm.default_kernel()} ({PORTS} agent ports), runs={args.runs}")


if __name__ == "__main__":
    main()
