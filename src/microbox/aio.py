"""The asyncio twin of the SDK. It wraps the sync implementation, one blocking
call per worker-thread hop, so both share every line of behaviour.

    async with AsyncRuntime() as rt:
        async with await rt.run("busybox") as box:
            result = await box.run(["uname", "-a"])

"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from microbox.agent.ops import ExitStatus
from microbox.sdk import Box, Execution, Result, Runtime


class AsyncExecution:
    def __init__(self, ex: Execution) -> None:
        self._ex = ex
        self.pid = ex.pid

    @property
    def status(self) -> ExitStatus | None:
        return self._ex.status

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self._ex.write, data)

    async def close_stdin(self) -> None:
        await asyncio.to_thread(self._ex.close_stdin)

    async def signal(self, sig: int = 15) -> None:
        await asyncio.to_thread(self._ex.signal, sig)

    async def resize(self, rows: int, cols: int) -> None:
        await asyncio.to_thread(self._ex.resize, rows, cols)

    async def events(self) -> AsyncIterator[tuple[str, bytes]]:
        it = self._ex.events()
        end = object()
        while True:
            item = await asyncio.to_thread(next, it, end)
            if item is end:
                return
            assert isinstance(item, tuple)
            yield item

    async def wait(self) -> ExitStatus:
        return await asyncio.to_thread(self._ex.wait)


class AsyncBox:
    def __init__(self, box: Box) -> None:
        self._box = box

    @property
    def id(self) -> str:
        return self._box.id

    @property
    def name(self) -> str:
        return self._box.name

    async def exec(self, argv: Sequence[str], **kw: Any) -> AsyncExecution:
        return AsyncExecution(await asyncio.to_thread(self._box.exec, argv, **kw))

    async def run(self, argv: Sequence[str], **kw: Any) -> Result:
        return await asyncio.to_thread(self._box.run, argv, **kw)

    async def put(self, local: str | Path | IO[bytes], remote: str,
                  mode: int | None = None) -> None:
        await asyncio.to_thread(self._box.put, local, remote, mode)

    async def get(self, remote: str, local: str | Path | IO[bytes]) -> None:
        await asyncio.to_thread(self._box.get, remote, local)

    async def ping(self) -> None:
        await asyncio.to_thread(self._box.ping)

    async def close(self) -> None:
        await asyncio.to_thread(self._box.close)

    async def __aenter__(self) -> AsyncBox:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class AsyncRuntime:
    def __init__(self, runtime: Runtime | None = None) -> None:
        self._rt = runtime or Runtime()

    async def run(self, image: str, **kw: Any) -> AsyncBox:
        return AsyncBox(await asyncio.to_thread(self._rt.run, image, **kw))

    async def close(self) -> None:
        await asyncio.to_thread(self._rt.close)

    async def __aenter__(self) -> AsyncRuntime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
