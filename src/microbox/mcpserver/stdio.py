"""Serve over stdin/stdout until stdin closes or a signal comes, then clean up.

The SDK's stdio transport reads stdin on a worker thread, which a cancel cannot
interrupt: after SIGTERM the server would wait for the client's next line. So
a pipe on stdin is read here on the event loop instead (cancellable at once);
stdout stays the SDK's.
"""

from __future__ import annotations

import fcntl
import os
import signal
import stat
from typing import Any, cast

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server

from microbox.mcpserver.sandbox import Sandbox

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
MAX_LINE = 64 << 20  # one JSON-RPC message; a write_file of 4 MiB is ~5.6 MB


class PipeLines:
    """Lines (text) of a pipe or socket, read without a thread."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()
        self._eof = False
        os.set_blocking(fd, False)

    def __aiter__(self) -> PipeLines:
        return self

    async def __anext__(self) -> str:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0 or (self._eof and self._buf):
                end = end + 1 if end >= 0 else len(self._buf)
                line = bytes(self._buf[:end])
                del self._buf[:end]
                return line.decode("utf-8", "replace")
            if self._eof:
                raise StopAsyncIteration
            if len(self._buf) > MAX_LINE:
                raise ValueError(f"a message on stdin is longer than {MAX_LINE} bytes")
            await anyio.wait_readable(self._fd)
            try:
                chunk = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            self._eof = not chunk
            self._buf += chunk


def claim_stdin() -> PipeLines | None:
    """Take stdin for the protocol (fd 0 then reads /dev/null, so nothing else
    consumes messages); None if it is not a pipe or socket (the SDK reads it)."""
    try:
        kind = os.fstat(0).st_mode
    except OSError:
        return None
    if not (stat.S_ISFIFO(kind) or stat.S_ISSOCK(kind)):
        return None
    private = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return PipeLines(private)


async def _serve(app: MCPServer[Any]) -> None:
    stdin = claim_stdin()
    async with stdio_server(stdin=cast(Any, stdin)) as (read, write):
        # MCPServer.run_stdio_async takes no streams; its low-level server does.
        server = app._lowlevel_server
        await server.run(read, write, server.create_initialization_options())


async def _until_signal(scope: anyio.CancelScope, got: list[int]) -> None:
    with anyio.open_signal_receiver(*SIGNALS) as signals:
        async for signum in signals:
            got.append(signum)
            scope.cancel()
            return


async def _main(app: MCPServer[Any], sandbox: Sandbox) -> int:
    got: list[int] = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_until_signal, tg.cancel_scope, got)
            await _serve(app)
            tg.cancel_scope.cancel()
    finally:
        for sig in SIGNALS:  # cleanup is short and bounded; let nothing cut it in half
            signal.signal(sig, signal.SIG_IGN)
        with anyio.CancelScope(shield=True):
            await sandbox.close()
    return 128 + got[0] if got else 0


def run(app: MCPServer[Any], sandbox: Sandbox) -> int:
    """Serve until stdin closes (exit 0) or SIGTERM/SIGINT/SIGHUP (exit 128+N);
    the sandbox is closed on every path."""
    return anyio.run(_main, app, sandbox)
