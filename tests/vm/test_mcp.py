"""`microbox mcp` driven by the MCP SDK's own stdio client, as a model's host would."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import psutil
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import CallToolResult, TextContent

import microbox
from microbox.vmm import process
from tests.conftest import still_running
from tests.vm.conftest import wait_for

LABEL = "microbox.mcp"
TOOLS = {"create_box", "exec", "read_file", "write_file", "list_dir", "delete_box", "fork_box",
         "list_boxes"}


@asynccontextmanager
async def server(log: Path, *args: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "microbox", "mcp", *args],
                                   env=dict(os.environ))
    with open(log, "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            yield session
    assert "Traceback" not in log.read_text(), log.read_text()


async def _call(s: ClientSession, tool: str, args: dict[str, Any]) -> CallToolResult:
    r = await s.call_tool(tool, args)
    assert isinstance(r, CallToolResult)
    return r


async def ok(s: ClientSession, tool: str, **args: Any) -> dict[str, Any]:
    r = await _call(s, tool, args)
    assert not r.is_error, r.content
    data: dict[str, Any] = r.structured_content
    assert isinstance(data, dict)
    return data


async def error(s: ClientSession, tool: str, **args: Any) -> str:
    r = await _call(s, tool, args)
    assert r.is_error, r.structured_content
    assert isinstance(r.content[0], TextContent)
    return r.content[0].text


def ours() -> list[microbox.Box]:
    with microbox.Runtime() as rt:
        return rt.boxes.list(all=True, labels={LABEL: None})


def run(body: Callable[[], Awaitable[None]]) -> None:
    anyio.run(body)


def test_tools_scope_and_cleanup_on_exit(tmp_path: Path) -> None:
    rt = microbox.Runtime()
    with rt.boxes.run("busybox", name="mcp-outside") as outside:

        async def body() -> None:
            async with server(tmp_path / "server.log") as s:
                tools = {t.name: t for t in (await s.list_tools()).tools}
                assert set(tools) == TOOLS
                assert all(t.description and t.input_schema for t in tools.values())
                limits = tools["exec"].input_schema["properties"]["timeout_seconds"]
                assert (limits["default"], limits["maximum"]) == (60.0, 600.0)

                box = await ok(s, "create_box", name="mcp-a", memory_mib=128)
                assert (box["name"], box["status"], box["memory_mib"]) == ("mcp-a", "running", 128)

                r = await ok(s, "exec", box="mcp-a",
                             argv=["sh", "-c", "cat; echo err >&2; exit 3"], stdin="in\n")
                assert (r["exit_code"], r["stdout"], r["stderr"]) == (3, "in\n", "err\n")
                assert not r["timed_out"] and not r["stdout_truncated"] and r["note"] is None

                r = await ok(s, "exec", box=box["id"], argv=["sleep", "30"], timeout_seconds=1)
                assert (r["exit_code"], r["timed_out"]) == (124, True)
                assert "1-second timeout" in r["note"]

                r = await ok(s, "exec", box="mcp-a", max_output_bytes=1000,
                             argv=["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' a; echo e >&2"])
                assert r["stdout"] == "a" * 1000 and r["stderr"] == "e\n"
                assert (r["stdout_bytes"], r["stdout_truncated"]) == (100000, True)
                assert (r["stderr_bytes"], r["stderr_truncated"]) == (2, False)
                assert "stdout truncated: showing the first 1000 of 100000 bytes" in r["note"]

                blob = bytes(range(256)) * 3
                w = await ok(s, "write_file", box="mcp-a", path="/root/d/blob", mode="600",
                             content=base64.b64encode(blob).decode(), encoding="base64")
                assert (w["size"], w["mode"]) == (768, "600")
                f = await ok(s, "read_file", box="mcp-a", path="/root/d/blob")
                assert (f["encoding"], f["mode"], f["size"]) == ("base64", "600", 768)
                assert base64.b64decode(f["content"]) == blob
                await ok(s, "write_file", box="mcp-a", path="/root/d/note.txt", content="héllo\n")
                f = await ok(s, "read_file", box="mcp-a", path="/root/d/note.txt")
                assert (f["encoding"], f["content"]) == ("utf-8", "héllo\n")
                f = await ok(s, "read_file", box="mcp-a", path="/root/d/note.txt",
                             encoding="base64")
                assert base64.b64decode(f["content"]) == "héllo\n".encode()
                assert "limit" in await error(s, "read_file", box="mcp-a", path="/root/d/blob",
                                              max_bytes=100)

                listing = (await ok(s, "list_dir", box="mcp-a", path="/root/d"))["listing"]
                assert " blob\n" in listing and " note.txt\n" in listing
                assert "cannot list /nope" in await error(s, "list_dir", box="mcp-a",
                                                          path="/nope")

                assert "command not found" in await error(s, "exec", box="mcp-a",
                                                          argv=["no-such-command"])
                assert "list_boxes" in await error(s, "exec", box="nope", argv=["true"])
                # a box this server did not create is out of reach, by name or by id
                for ref in (outside.name, outside.id):
                    assert "was created by this server" in await error(
                        s, "exec", box=ref, argv=["true"])
                assert "timeout_seconds" in await error(s, "exec", box="mcp-a", argv=["true"],
                                                        timeout_seconds=10_000)

                await ok(s, "create_box", name="mcp-b")
                kids = (await ok(s, "fork_box", box="mcp-a"))["boxes"]
                assert [k["name"] for k in kids] == ["mcp-a-fork-1"]
                r = await ok(s, "exec", box="mcp-a-fork-1", argv=["cat", "/root/d/note.txt"])
                assert r["stdout"] == "héllo\n"
                assert "limit" in await error(s, "fork_box", box="mcp-a", count=8)
                assert (await ok(s, "delete_box", box="mcp-a-fork-1"))["name"] == "mcp-a-fork-1"
                names = {b["name"] for b in (await ok(s, "list_boxes"))["boxes"]}
                assert names == {"mcp-a", "mcp-b"}
                assert (await ok(s, "delete_box", box="mcp-b"))["name"] == "mcp-b"
                names = {b["name"] for b in (await ok(s, "list_boxes"))["boxes"]}
                assert names == {"mcp-a"}
                assert [b.name for b in ours()] == ["mcp-a"]

        run(body)
        # stdin closed: the server deleted its own boxes, and only those
        assert ours() == []
        assert outside.run(["true"]).exit_code == 0
    rt.close()


def test_keep_leaves_boxes_running(tmp_path: Path) -> None:
    async def body() -> None:
        async with server(tmp_path / "server.log", "--keep") as s:
            await ok(s, "create_box", name="mcp-kept")

    run(body)
    kept = ours()
    try:
        assert [(b.name, b.status) for b in kept] == [("mcp-kept", "running")]
        assert kept[0].run(["echo", "still here"]).stdout == b"still here\n"
    finally:
        for box in kept:
            box.delete(force=True)


def test_sigterm_deletes_the_boxes(tmp_path: Path) -> None:
    async def body() -> None:
        async with server(tmp_path / "server.log") as s:
            await ok(s, "create_box", name="mcp-term")
            assert [b.name for b in ours()] == ["mcp-term"]
            (srv,) = [p for p in psutil.Process().children()
                      if "mcp" in p.cmdline() and "microbox" in p.cmdline()]
            os.kill(srv.pid, signal.SIGTERM)
            wait_for(lambda: process.exited(srv.pid), what="the server to exit")
            assert ours() == []

    run(body)


def test_sigkill_takes_every_box_with_it_forks_included(tmp_path: Path) -> None:
    """fork_box's clones were restored detached and outlived a SIGKILLed server
    (5 runs of 6), though create_box's boxes went with it."""
    async def body() -> None:
        async with server(tmp_path / "server.log") as s:
            await ok(s, "create_box", name="mcp-kill")
            await ok(s, "fork_box", box="mcp-kill", count=2)
            made = ours()
            assert len(made) == 3
            vmms = {b.record.pid for b in made if b.record.pid is not None}
            assert len(vmms) == 3
            (srv,) = [p for p in psutil.Process().children()
                      if "mcp" in p.cmdline() and "microbox" in p.cmdline()]
            os.kill(srv.pid, signal.SIGKILL)
            assert not still_running(vmms, 10), "a box outlived the SIGKILLed server"
            assert ours() == []  # reconcile removes them: they were --rm boxes

    run(body)


def test_the_operators_network_policy_applies_to_every_box(tmp_path: Path) -> None:
    async def body() -> None:
        async with server(tmp_path / "server.log", "--deny-all",
                          "--allow-host", "pypi.org") as s:
            await ok(s, "create_box", name="mcp-policy")
            box = microbox.Runtime().boxes.get("mcp-policy")
            net = box.info().net
            assert net["mode"] == "user"
            assert net["policy"]["deny_all"] is True
            assert net["policy"]["allow_hosts"] == ["pypi.org"]

    run(body)


def test_a_bad_policy_stops_the_server_before_it_serves() -> None:
    r = subprocess.run([sys.executable, "-m", "microbox", "mcp", "--allow-cidr", "300.0.0.0/8"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr == (b"microbox: bad --allow-cidr '300.0.0.0/8': use an address or a range "
                        b"such as 203.0.113.0/24.\n")
