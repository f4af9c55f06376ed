"""Networking, in one run (docs/net.md): `--net user` and `--net tap`, against
stand-in servers in a network namespace of this host (tests/standin.py;
needs root). Nothing leaves the machine.

    .venv/bin/python bench/net.py [--mb 32] [--conns 50] [--starts 8]

Figures, each beside its floor measured in the same run:
  upload     MB/s of --mb MB sent from the guest to a stand-in's sink: --net
             user through the proxy (CONNECT), --net tap directly (routed by
             the host through the box's namespace and nftables); floor: the
             same bytes sent by the host alone (and through a box's proxy
             socket by the host: no guest, no slirp)
  download   MB/s of --mb MB fetched by the guest (user: an absolute-URI GET
             to the proxy); floor: the same GET by the host alone
  connect    connection setup, p50/p95 of --conns: (user: connect to
             10.0.2.100:3128, CONNECT) to an echo server, one byte there and
             back; floor: the same from the host alone
  Each mode is measured open and with an allowlist (--allow-host of the
  stand-in's name; tap: its address comes from the box's resolver).
  start      wall of rt.boxes.run of a busybox box restored from its template
             (warm), --net user and --net tap against the floor --net none,
             p50 of --starts
The guest side runs in a debian box (python3 times itself); the box's own
exec overhead is outside every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import standin

import microbox
from microbox.core.boxdir import box_dir

SERVER = "203.0.113.10"
NAME = "standin.test"
BLOCK = 64 * 1024

GUEST = r"""
import json, socket, sys, time
PROXY = ("10.0.2.100", 3128)
what, server, n, via = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def tunnel(port):
    if via == "direct":
        return socket.create_connection((socket.gethostbyname(server), port))
    s = socket.create_connection(PROXY)
    s.sendall(b"CONNECT %s:%d HTTP/1.1\r\n\r\n" % (server.encode(), port))
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return s

if what == "upload":
    block = b"\0" * 65536
    t = time.perf_counter()
    s = tunnel(9000)
    for _ in range(n // len(block)):
        s.sendall(block)
    s.shutdown(socket.SHUT_WR)
    got = int(s.recv(100))
    print(json.dumps({"s": time.perf_counter() - t, "bytes": got}))
elif what == "download":
    t = time.perf_counter()
    if via == "direct":
        s = socket.create_connection((server, 80))
        s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % n)
    else:
        s = socket.create_connection(PROXY)
        s.sendall(b"GET http://%s/bytes/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  % (server.encode(), n))
    got = 0
    while chunk := s.recv(1 << 16):
        got += len(chunk)
    print(json.dumps({"s": time.perf_counter() - t, "bytes": got}))
else:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        s = tunnel(7)
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        out.append(time.perf_counter() - t)
        s.close()
    print(json.dumps(out))
"""


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def guest(box: microbox.Box, *args: object) -> object:
    r = box.run(["python3", "-c", GUEST, *map(str, args)], timeout=600)
    if r.exit_code != 0:
        raise SystemExit(f"guest script failed: {r.stderr.decode(errors='replace')}")
    return json.loads(r.stdout)


def _tunnel(sock_path: Path | None, port: int) -> socket.socket:
    """A connection to the stand-in's port: direct, or CONNECT through a proxy socket."""
    if sock_path is None:
        return socket.create_connection((SERVER, port))
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock_path))
    s.sendall(f"CONNECT {SERVER}:{port} HTTP/1.1\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    return s


def host_upload(n: int, via: Path | None = None) -> float:
    block = b"\0" * BLOCK
    t = time.perf_counter()
    with _tunnel(via, 9000) as s:
        for _ in range(n // BLOCK):
            s.sendall(block)
        s.shutdown(socket.SHUT_WR)
        assert int(s.recv(100)) == n // BLOCK * BLOCK
    return time.perf_counter() - t


def host_download(n: int) -> float:
    t = time.perf_counter()
    got = len(standin.get(SERVER, f"/bytes/{n}"))
    assert got == n
    return time.perf_counter() - t


def host_connects(n: int, via: Path | None = None) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        with _tunnel(via, 7) as s:
            s.sendall(b"x")
            assert s.recv(1) == b"x"
        out.append(time.perf_counter() - t)
    return out


def starts(rt: microbox.Runtime, n: int) -> dict[str, list[float]]:
    """Warm starts of each mode, interleaved so that none gets the quieter moments."""
    out: dict[str, list[float]] = {"user": [], "tap": [], "none": []}
    for net in out:
        rt.images.warm("busybox", net=net)
    for _ in range(n):
        for net, times in out.items():
            t = time.perf_counter()
            box = rt.boxes.run("busybox", net=net)
            times.append(time.perf_counter() - t)
            box.close()
    return out


def line(name: str, value: str, floor: str, ratio: float | None = None) -> None:
    r = f"{ratio:6.2f}" if ratio is not None else ""
    print(f"{name:<44} {value:>18}   {floor:<34} {r}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=32)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--starts", type=int, default=8)
    args = ap.parse_args()
    why = standin.available()
    if why:
        raise SystemExit(f"bench/net.py: {why}")
    n = args.mb * 1024 * 1024
    servers = standin.start([SERVER], name=f"mbb{os.getpid()}")
    try:
        with microbox.Runtime() as rt:
            with rt.boxes.run("debian") as box:  # the proxy's own floor, from the host
                proxy = box_dir(box.record).proxy_sock
                up_host, up_proxy = host_upload(n), host_upload(n, proxy)
                down_host = host_download(n)
                c_host, c_proxy = host_connects(args.conns), host_connects(args.conns, proxy)
            runs: dict[str, tuple[Any, Any, Any]] = {}
            for net, via in (("user", "proxy"), ("tap", "direct")):
                for kind, allow in (("open", []), ("allowlist", [NAME])):
                    with rt.boxes.run("debian", net=net, add_hosts=[f"{NAME}:{SERVER}"],
                                allow_hosts=allow) as box:
                        guest(box, "connect", NAME, 3, via)  # warm the guest's python, path
                        runs[f"--net {net} ({kind})"] = (
                            guest(box, "upload", NAME, n, via),
                            guest(box, "download", NAME if via == "proxy" else SERVER, n, via),
                            guest(box, "connect", NAME, args.conns, via))
            started = starts(rt, args.starts)
    finally:
        servers.close()
    mbs = n / 1e6
    print(f"bench/net.py: {args.mb} MiB transfers, {args.conns} connections, "
          f"{args.starts} starts; TCG unless KVM works\n")
    line("figure", "value", "floor (same run)", None)
    line("host -> a box's proxy socket -> stand-in", f"{mbs / up_proxy:.0f} MB/s",
         f"host alone {mbs / up_host:.0f} MB/s", mbs / up_host / (mbs / up_proxy))
    line("  connection setup, p50", f"{pct(c_proxy, 0.5) * 1000:.3f} ms",
         f"host alone {pct(c_host, 0.5) * 1000:.3f} ms", pct(c_proxy, 0.5) / pct(c_host, 0.5))
    for label, (t_up, t_down, t_conns) in runs.items():
        line(f"{label}: upload guest -> stand-in", f"{mbs / t_up['s']:.1f} MB/s",
             f"host alone {mbs / up_host:.0f} MB/s", mbs / up_host / (mbs / t_up["s"]))
        line(f"{label}: download stand-in -> guest",
             f"{mbs / t_down['s']:.1f} MB/s", f"host alone {mbs / down_host:.0f} MB/s",
             mbs / down_host / (mbs / t_down["s"]))
        p50 = pct(t_conns, 0.5) * 1000
        line(f"{label}: connection setup, p50", f"{p50:.2f} ms",
             f"host alone {pct(c_host, 0.5) * 1000:.3f} ms", p50 / (pct(c_host, 0.5) * 1000))
        line("  p95", f"{pct(t_conns, 0.95) * 1000:.2f} ms", "", None)
    sn = statistics.median(started["none"])
    for mode in ("user", "tap"):
        sm = statistics.median(started[mode])
        line(f"box start, warm, --net {mode}, p50", f"{sm:.3f} s", f"--net none {sn:.3f} s",
             sm / sn)
    print("\n(ratio: floor's speed over the figure's, or the figure's time over the floor's)")


if __name__ == "__main__":
    main()
