"""Working inside one box, in one run: exec latency and throughput, copies,
forwarded connections, and what the box's shim costs.

    .venv/bin/python bench/inside.py [--execs 200] [--mb 100]

Figures:
  exec rtt      `true` through Box.run, p50/p95: one client, then 16 threads at once;
                its floor: a `true` started by a shell inside the guest; then
                `microbox exec BOX -- true` from a new process (the CLI)
  exec stdout   MB/s of `dd if=/dev/zero bs=64k` read through exec
  exec stdin    MB/s of 64 KiB writes into `dd of=/dev/null bs=64k` through exec
  floor         the same bytes through an in-guest pipe (`dd | cat >/dev/null`),
                timed around one exec: each throughput is shown as a ratio to it
  cp            one file of --mb MB in and out, and a tree of 5,000 small files
  forward       a published port: MB/s each way, connection setup p50 (connect,
                one byte echoed back)
  shim          RSS and Pss of the box's idle shim
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import microbox
from microbox.core import shim
from microbox.core.boxdir import box_dir

BLOCK = 64 * 1024


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def ms(values: list[float]) -> str:
    return f"p50 {pct(values, 0.5) * 1000:6.2f} ms  p95 {pct(values, 0.95) * 1000:6.2f} ms"


def seconds(fn: Callable[[], object]) -> float:
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def rtt(box: microbox.Box, n: int) -> list[float]:
    return [seconds(lambda: box.run(["true"])) for _ in range(n)]


def cli_exec(box: microbox.Box, n: int) -> list[float]:
    """Wall of `microbox exec BOX -- true` from a new process: what a shell user
    waits for, Python's start and the command's imports included."""
    argv = [sys.executable, "-m", "microbox", "exec", box.name, "--", "true"]
    return [seconds(lambda: subprocess.run(argv, check=True)) for _ in range(n)]


def spawn_floor(box: microbox.Box, n: int) -> float:
    """Seconds per `true` started and waited for by a shell inside the guest: the
    guest's own cost of one exec, under any host round trip (timed from the host,
    less the same shell running no `true`)."""
    loop = "i=0; while [ $i -lt {} ]; do /bin/true; i=$((i+1)); done"
    empty = statistics.median(seconds(lambda: box.run(["sh", "-c", loop.format(0)]))
                              for _ in range(5))
    return (seconds(lambda: box.run(["sh", "-c", loop.format(n)])) - empty) / n


def rtt_parallel(rt: microbox.Runtime, box: microbox.Box, n: int, clients: int) -> list[float]:
    handles = [rt.boxes.get(box.name) for _ in range(clients)]
    for h in handles:
        h.run(["true"])  # each handle's own session, opened before the clock starts
    with ThreadPoolExecutor(clients) as pool:
        runs = pool.map(lambda i: rtt(handles[i], n // clients), range(clients))
        times = [t for r in runs for t in r]
    for h in handles:
        h.release()
    return times


def stdout_mbs(box: microbox.Box, mb: int) -> float:
    ex = box.exec(["dd", "if=/dev/zero", f"bs={BLOCK}", f"count={mb * 16}"])
    t = time.monotonic()
    got = sum(len(d) for name, d in ex.events() if name == "stdout")
    dt = time.monotonic() - t
    assert got == mb * (1 << 20), got
    return mb / dt


def stdin_mbs(box: microbox.Box, mb: int) -> float:
    ex = box.exec(["dd", "of=/dev/null", f"bs={BLOCK}"], stdin=True)
    block = b"\0" * BLOCK
    t = time.monotonic()
    for _ in range(mb * 16):
        ex.write(block)
    ex.close_stdin()
    ex.wait()
    return mb / (time.monotonic() - t)


def floor_mbs(box: microbox.Box, mb: int) -> float:
    base = statistics.median(rtt(box, 5))
    t = time.monotonic()
    r = box.run(["sh", "-c", f"dd if=/dev/zero bs={BLOCK} count={mb * 16} 2>/dev/null"
                 " | cat >/dev/null"])
    assert r.exit_code == 0
    return mb / (time.monotonic() - t - base)


def cp_round_trip(box: microbox.Box, src: Path, out: Path) -> tuple[float, float]:
    """Seconds to copy `src` into /root/ of the box, and back out into `out`."""
    out.mkdir()
    t_in = seconds(lambda: box.copy_in(str(src), "/root/"))
    t_out = seconds(lambda: box.copy_out(f"/root/{src.name}", str(out)))
    return t_in, t_out


def cp_figures(box: microbox.Box, mb: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "big"
        with open(src, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(mb):
                f.write(block)
        t_in, t_out = cp_round_trip(box, src, Path(tmp) / "out")
        assert (Path(tmp) / "out" / "big").stat().st_size == mb << 20
        lines = [f"cp {mb} MB file   in {mb / t_in:7.1f} MB/s   out {mb / t_out:7.1f} MB/s"]
        tree = Path(tmp) / "tree"
        for i in range(5000):
            d = tree / f"d{i // 100}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i}").write_bytes(b"x" * 512)
        t_in, t_out = cp_round_trip(box, tree, Path(tmp) / "back")
        lines.append(f"cp 5,000 files   in {5000 / t_in:7.0f} files/s   "
                     f"out {5000 / t_out:7.0f} files/s")
    return lines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def forward_figures(rt: microbox.Runtime, mb: int) -> list[str]:
    ports = [free_port() for _ in range(3)]
    box = rt.boxes.run("busybox", name="bench-fwd", rm=True,
                 ports=[f"{ports[0]}:7000", f"{ports[1]}:7001", f"{ports[2]}:7002"])
    try:
        box.exec(["nc", "-ll", "-p", "7000", "-e", "cat"], detach=True)
        box.exec(["nc", "-ll", "-p", "7001", "-e", "dd", "of=/dev/null", f"bs={BLOCK}"],
                 detach=True)
        box.exec(["nc", "-ll", "-p", "7002", "-e", "dd", "if=/dev/zero", f"bs={BLOCK}",
                  f"count={mb * 16}"], detach=True)
        for port in (7000, 7001, 7002):  # until each server listens
            box.run(["sh", "-c", f"until grep -qiE ':{port:04X} [0-9A-F]+:0000 0A' /proc/net/tcp "
                     "/proc/net/tcp6 2>/dev/null; do usleep 10000; done"])
        setups = []
        for _ in range(50):
            t = time.monotonic()
            with socket.create_connection(("127.0.0.1", ports[0])) as s:
                s.sendall(b"x")
                assert s.recv(1) == b"x"
            setups.append(time.monotonic() - t)
        with socket.create_connection(("127.0.0.1", ports[1])) as s:
            block = b"\0" * BLOCK
            t = time.monotonic()
            for _ in range(mb * 16):
                s.sendall(block)
            s.shutdown(socket.SHUT_WR)
            s.recv(1)  # the guest side closes once dd has read it all
            up = mb / (time.monotonic() - t)
        with socket.create_connection(("127.0.0.1", ports[2])) as s:
            t = time.monotonic()
            got = 0
            while chunk := s.recv(1 << 20):
                got += len(chunk)
            down = mb / (time.monotonic() - t)
        return [f"forward          host->guest {up:7.1f} MB/s   guest->host {down:7.1f} MB/s",
                f"forward setup    {ms(setups)}"]
    finally:
        box.delete(force=True)


def shim_memory(box: microbox.Box) -> str:
    pid = shim.pid(box_dir(box.record))
    if pid is None:
        return "shim             (none)"
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    return f"shim (idle)      Rss {fields['Rss']}   Pss {fields['Pss']}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--execs", type=int, default=200)
    ap.add_argument("--mb", type=int, default=100)
    args = ap.parse_args()
    with microbox.Runtime() as rt:
        box = rt.boxes.run("busybox", name="bench-inside", rm=True)
        try:
            print(shim_memory(box))
            box.run(["true"])
            one = rtt(box, args.execs)
            spawn = spawn_floor(box, args.execs)
            print(f"exec rtt 1       {ms(one)}   {pct(one, 0.5) / spawn:4.1f}x the floor")
            many = rtt_parallel(rt, box, args.execs, 16)
            print(f"exec rtt 16      {ms(many)}   {pct(many, 0.5) / spawn:4.1f}x the floor")
            print(f"microbox exec    {ms(cli_exec(box, 20))}   (the CLI, a new process each)")
            print(f"floor (spawn)    {spawn * 1000:6.2f} ms per `true` a shell in the guest runs")
            floor = floor_mbs(box, args.mb)
            out = stdout_mbs(box, args.mb)
            inp = stdin_mbs(box, args.mb)
            print(f"floor (pipe)     {floor:7.1f} MB/s")
            print(f"exec stdout      {out:7.1f} MB/s   {out / floor:4.2f} of the floor")
            print(f"exec stdin       {inp:7.1f} MB/s   {inp / floor:4.2f} of the floor")
            for line in cp_figures(box, args.mb):
                print(line)
        finally:
            box.delete(force=True)
        for line in forward_figures(rt, args.mb):
            print(line)
    sys.stdout.flush()


if __name__ == "__main__":
    threading.excepthook = lambda a: print(a, file=sys.stderr)
    main()
