"""The boxes of one MCP server: made with its label, found only among its own,
and deleted (or, with keep, left running) when the server exits.

Scope is fixed, not an option: a model acts only on boxes this server instance
created, so it can never touch a user's other boxes, nor those of another MCP
server sharing the same MICROBOX_HOME.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import anyio

from microbox.errors import MicroboxError, NotFound, Refused
from microbox.sdk import Runtime
from microbox.sdk.aio import AsyncBox, AsyncRuntime

LABEL = "microbox.mcp"  # value: the server instance id
MAX_BOXES = 8  # live boxes per server, so a looping model cannot fill the host


class Sandbox:
    """Create, find, list and delete this server's boxes, over the async SDK."""

    def __init__(self, *, keep: bool = False, runtime: AsyncRuntime | None = None,
                 egress: dict[str, Any] | None = None) -> None:
        self.instance = uuid.uuid4().hex[:12]
        self.keep = keep
        self.egress = dict(egress or {})  # the operator's network policy for every box
        self.rt = runtime or AsyncRuntime()
        self._boxes: dict[str, AsyncBox] = {}  # by id; touched only on the event loop
        self._pending = 0

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL: self.instance}

    async def create(self, image: str, *, name: str | None, cpus: int, memory_mib: int,
                     env: dict[str, str]) -> AsyncBox:
        """Boot a box. Without keep it dies with this process (even on SIGKILL)
        and is removed; with keep it runs detached and outlives the server."""
        if len(self._boxes) + self._pending >= MAX_BOXES:
            raise Refused(f"this server already has {MAX_BOXES} boxes, its limit; delete one "
                          "with delete_box first")
        self._pending += 1
        try:
            box = await self.rt.boxes.run(image, name=name, cpus=cpus, memory_mib=memory_mib,
                                    env=env, labels=self.labels, rm=not self.keep,
                                    detach=self.keep, **self.egress)
        finally:
            self._pending -= 1
        self._boxes[box.id] = box
        return box

    async def fork(self, ref: str, count: int) -> list[AsyncBox]:
        """Running clones of one of this server's boxes (its labels go with them, so
        they are this server's too). Owned by this process as create's boxes are,
        they die with it even on SIGKILL, unless keep."""
        if len(self._boxes) + self._pending + count > MAX_BOXES:
            raise Refused(f"{count} more boxes would pass this server's limit of {MAX_BOXES}; "
                          "delete some with delete_box first")
        source = self.find(ref)
        self._pending += count
        try:
            clones = await source.fork(count, rm=not self.keep, detach=self.keep)
        finally:
            self._pending -= count
        for clone in clones:
            self._boxes[clone.id] = clone
        return clones

    def find(self, ref: str) -> AsyncBox:
        """One of this server's boxes by name, id or unique id prefix."""
        for box in self._boxes.values():
            if ref in (box.id, box.name):
                return box
        matches = [b for b in self._boxes.values() if len(ref) >= 4 and b.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        raise NotFound(f"no box {ref!r} was created by this server; call list_boxes to see the "
                       "boxes you can use, or create_box to make one")

    async def delete(self, ref: str) -> AsyncBox:
        box = self.find(ref)
        await box.delete(force=True)
        self._boxes.pop(box.id, None)
        return box

    async def list(self) -> list[AsyncBox]:
        """This server's boxes as the store sees them now (a crashed one shows `error`)."""
        return await self.rt.boxes.list(all=True, labels={LABEL: self.instance})

    async def close(self) -> None:
        """The server is exiting: delete its boxes, or with keep let go of them."""
        boxes = list(self._boxes.values())
        self._boxes.clear()
        async with anyio.create_task_group() as tg:
            for box in boxes:
                tg.start_soon(_release if self.keep else _delete, box)
        await self.rt.close()  # waits for calls still running, e.g. a cancelled boot
        if not self.keep:
            await anyio.to_thread.run_sync(_sweep, self.instance)


async def _release(box: AsyncBox) -> None:
    with contextlib.suppress(MicroboxError, OSError):
        await box.release()


async def _delete(box: AsyncBox) -> None:
    with contextlib.suppress(MicroboxError, OSError):
        await box.delete(force=True)


def _sweep(instance: str) -> None:
    """Delete any box still carrying this server's label (one whose handle failed
    to delete, or a boot that finished after its call was cancelled)."""
    with Runtime() as rt, contextlib.suppress(MicroboxError, OSError):
        rt.boxes.cleanup(rt.boxes.list(all=True, labels={LABEL: instance}))
