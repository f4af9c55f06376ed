"""Exec round trip through `microbox mcp` (the MCP SDK's stdio client, as a model's
host would drive it), next to the same exec through the SDK in this process.

    flock /tmp/microbox-vm.lock .venv/bin/python bench/mcp_exec.py --runs 50

Figures (ms, p50 / p95 over --runs calls of `true` in one running box):
  mcp   tools/call exec, client to server to guest and back
  sdk   Box.run(["true"]) in a box of this process (the floor the MCP layer adds to)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from microbox.sdk import Runtime


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def show(name: str, ms: list[float]) -> None:
    print(f"{name:4}  p50 {pct(ms, 0.5):7.2f} ms   p95 {pct(ms, 0.95):7.2f} ms   (n={len(ms)})")


async def through_mcp(runs: int) -> list[float]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "microbox", "mcp"],
                                   env=dict(os.environ))
    ms: list[float] = []
    async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        await s.call_tool("create_box", {"name": "bench-mcp"})
        await s.call_tool("exec", {"box": "bench-mcp", "argv": ["true"]})  # warm
        for _ in range(runs):
            t = time.perf_counter()
            r = await s.call_tool("exec", {"box": "bench-mcp", "argv": ["true"]})
            ms.append((time.perf_counter() - t) * 1000)
            assert not getattr(r, "is_error", False), r
    return ms


def through_sdk(runs: int) -> list[float]:
    ms: list[float] = []
    with Runtime() as rt, rt.run("busybox") as box:
        box.run(["true"])
        for _ in range(runs):
            t = time.perf_counter()
            box.run(["true"])
            ms.append((time.perf_counter() - t) * 1000)
    return ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    show("mcp", anyio.run(through_mcp, args.runs))
    show("sdk", through_sdk(args.runs))


if __name__ == "__main__":
    main()
