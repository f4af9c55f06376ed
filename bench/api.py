"""Front-end benchmark: what the HTTP API and the MCP server add to the SDK, in one run.

    .venv/bin/python bench/api.py [--execs 200] [--cycles 4]

Figures:
  exec     round trip of `true` in one running box: SDK (Box.run), HTTP
           (POST /boxes/{id}/run over a kept-alive connection) and MCP (the exec
           tool, through `microbox mcp` and the MCP SDK's stdio client), p50 and p95
  cycles   create + run `true` + delete through the API, per second, with 1 and
           16 concurrent clients (each client does --cycles cycles, in sequence)

The server runs as `microbox serve` in its own process on 127.0.0.1, as users run it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
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


async def through_mcp(n: int) -> list[float]:
    """`exec` of `true` through `microbox mcp`, as a model's host drives it."""
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=sys.executable, args=["-m", "microbox", "mcp"],
                                   env=dict(os.environ))
    out: list[float] = []
    async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        await s.call_tool("create_box", {"name": "bench-mcp"})
        await s.call_tool("exec", {"box": "bench-mcp", "argv": ["true"]})  # warm-up
        for _ in range(n):
            t = time.monotonic()
            r = await s.call_tool("exec", {"box": "bench-mcp", "argv": ["true"]})
            out.append(time.monotonic() - t)
            assert not getattr(r, "is_error", False), r
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--execs", type=int, default=200)
    ap.add_argument("--cycles", type=int, default=4)
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="mba-", dir="/tmp")
    os.environ["MICROBOX_HOME"] = home
    token_file = os.path.join(home, "bench-token")
    with open(token_file, "w") as f:
        f.write(TOKEN)

    from microbox.sdk import Runtime

    # The server is its own process, as users run it: its threads do not share
    # this process's GIL with the SDK baseline or the HTTP client.
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "microbox", "serve", "--port", str(port),
                               "--token-file", token_file], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    rates: dict[int, float] = {}
    rt = Runtime()
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
            deadline = time.monotonic() + 30
            while True:  # bench start-up only: wait for the server to listen
                try:
                    client.get("/health").raise_for_status()
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise
                    time.sleep(0.05)
            with rt.boxes.run("busybox", accel="tcg") as box:
                box.run(["true"])
                client.post(f"/boxes/{box.id}/run", json={"command": ["true"]})  # warm-up
                # Interleaved, one of each per round: this host's speed drifts
                # by 2x within minutes, which two back-to-back series would
                # read as a difference between the paths.
                sdk, http = [], []
                for _ in range(args.execs):
                    sdk += timed(lambda: box.run(["true"]), 1)
                    http += timed(lambda: client.post(f"/boxes/{box.id}/run",
                                                      json={"command": ["true"]}
                                                      ).raise_for_status(), 1)
            mcp = asyncio.run(through_mcp(args.execs))
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
        server.terminate()
        server.wait(30)
        rt.close()
        shutil.rmtree(home, ignore_errors=True)
    print(f"{'figure':<48}{'p50':>10}{'p95':>10}")
    for label, values in ((f"exec `true`, SDK Box.run (x{len(sdk)})", sdk),
                          (f"exec `true`, HTTP POST /run (x{len(http)})", http),
                          (f"exec `true`, MCP exec tool (x{len(mcp)})", mcp)):
        print(f"{label:<48}{statistics.median(values) * 1000:>8.2f}ms"
              f"{pct(values, 0.95) * 1000:>8.2f}ms")
    base = statistics.median(sdk)
    for name, values in (("HTTP", http), ("MCP", mcp)):
        extra = (statistics.median(values) - base) * 1000
        print(f"{f'{name} - SDK (p50)':<48}{extra:>8.2f}ms"
              f"{statistics.median(values) / base:>9.2f}x")
    paired = statistics.median(h - s for h, s in zip(http, sdk, strict=True)) * 1000
    print(f"{'HTTP - SDK, median of paired rounds':<48}{paired:>8.2f}ms")
    for clients, rate in rates.items():
        print(f"{f'create+run+delete via API, {clients} client(s)':<48}{rate:>8.2f}/s")


if __name__ == "__main__":
    main()
