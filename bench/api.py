"""HTTP API benchmark: what the API adds to the SDK, in one run.

    .venv/bin/python bench/api.py [--execs 200] [--cycles 8]

Figures:
  exec     round trip of `true` in one running box: SDK (Box.run) and HTTP
           (POST /boxes/{id}/run over a kept-alive connection), p50 and p95
  cycles   create + run `true` + delete through the API, per second, with 1 and
           16 concurrent clients (each client does --cycles cycles, in sequence)

The server runs in this process (uvicorn on a thread, 127.0.0.1), like the tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

TOKEN = "bench-token"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def timed(fn: object, n: int) -> list[float]:
    assert callable(fn)
    out = []
    for _ in range(n):
        t = time.monotonic()
        fn()
        out.append(time.monotonic() - t)
    return out


def cycle(client: httpx.Client, n: int) -> None:
    for _ in range(n):
        r = client.post("/boxes", json={"image": "busybox", "accel": "tcg", "memory_mib": 128})
        r.raise_for_status()
        ref = r.json()["data"]["id"]
        try:
            client.post(f"/boxes/{ref}/run", json={"command": ["true"]}).raise_for_status()
        finally:
            client.delete(f"/boxes/{ref}", params={"force": True}).raise_for_status()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--execs", type=int, default=200)
    ap.add_argument("--cycles", type=int, default=4)
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="mba-", dir="/tmp")
    os.environ["MICROBOX_HOME"] = home

    from microbox.api import create_app, server
    from microbox.sdk import Runtime

    rt = Runtime()
    sock = server.bind_tcp("127.0.0.1", 0)
    srv = server.server(create_app(rt, TOKEN))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started and thread.is_alive():
        time.sleep(0.01)  # bench start-up only: wait for uvicorn's flag
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    rates: dict[int, float] = {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
            with rt.run("busybox", accel="tcg") as box:
                box.run(["true"])
                client.post(f"/boxes/{box.id}/run", json={"command": ["true"]})  # warm-up
                sdk = timed(lambda: box.run(["true"]), args.execs)
                http = timed(lambda: client.post(f"/boxes/{box.id}/run",
                                                 json={"command": ["true"]}).raise_for_status(),
                             args.execs)
            for clients in (1, 16):
                start = time.monotonic()
                with ThreadPoolExecutor(clients) as pool:
                    conns = [httpx.Client(base_url=url, headers=headers, timeout=600)
                             for _ in range(clients)]
                    list(pool.map(lambda c: cycle(c, args.cycles), conns))
                    for c in conns:
                        c.close()
                rates[clients] = clients * args.cycles / (time.monotonic() - start)
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()
        rt.close()
        shutil.rmtree(home, ignore_errors=True)
    print(f"{'figure':<48}{'p50':>10}{'p95':>10}")
    for label, values in ((f"exec `true`, SDK Box.run (x{len(sdk)})", sdk),
                          (f"exec `true`, HTTP POST /run (x{len(http)})", http)):
        print(f"{label:<48}{statistics.median(values) * 1000:>8.2f}ms"
              f"{pct(values, 0.95) * 1000:>8.2f}ms")
    print(f"{'HTTP / SDK (p50)':<48}{statistics.median(http) / statistics.median(sdk):>9.2f}x")
    for clients, rate in rates.items():
        print(f"{f'create+run+delete via API, {clients} client(s)':<48}{rate:>8.2f}/s")


if __name__ == "__main__":
    main()
