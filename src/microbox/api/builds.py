"""Image builds and commits: `POST /images/build` streams a Dockerfile
build's steps as NDJSON, `POST /boxes/{ref}/commit` makes an image of a box.

A build's context is a directory on the server's host, named by its absolute
path: the API is for whoever holds the token, who can run boxes on this host
already (docs/api.md says so; the MCP server has no build tool, so that a
model never chooses host paths).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from microbox.api.boxes import RT, image_info
from microbox.api.guard import Invalid
from microbox.api.models import BuildBody, CommitBody, Envelope, ImageInfo
from microbox.envelope import envelope
from microbox.errors import MicroboxError

router = APIRouter(tags=["images"])
_END = object()


class _Events:
    """A build's Report whose events go to the event loop's queue, from the
    SDK's worker thread."""

    tty = False

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object]) -> None:
        self._loop = loop
        self._queue = queue

    def _put(self, event: object) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    def step(self, text: str) -> None:
        self._put({"type": "step", "text": text})

    def advance(self, done: int, total: int | None) -> None:
        pass

    def output(self, data: bytes) -> None:
        self._put({"type": "output", "text": data.decode(errors="replace")})


@router.post("/images/build", name="build", response_class=StreamingResponse,
             summary="Build an image from a Dockerfile; the steps stream as NDJSON.",
             responses={200: {"content": {"application/x-ndjson": {}},
                              "description": "One JSON event a line: step, output, then "
                              "result (or error). See docs/api.md."}})
async def build(body: BuildBody, rt: RT) -> StreamingResponse:
    if not Path(body.context).is_absolute():
        raise Invalid(f"the context {body.context!r} is not an absolute path; give the "
                      "directory's full path on the server's host")
    queue: asyncio.Queue[object] = asyncio.Queue()
    events = _Events(asyncio.get_running_loop(), queue)

    async def run() -> None:
        try:
            img = await rt.images.build(body.context, tag=body.tag, dockerfile=body.dockerfile,
                                        build_args=body.build_args, target=body.target,
                                        no_cache=body.no_cache, net=body.net,
                                        progress=events)
            queue.put_nowait({"type": "result", **envelope("build", 0, image_info(img))})
        except MicroboxError as err:
            queue.put_nowait({"type": "error", **envelope("build", err.exit_code, None, err)})
        finally:
            queue.put_nowait(_END)

    task = asyncio.create_task(run())
    return StreamingResponse(_lines(queue, task), media_type="application/x-ndjson")


async def _lines(queue: asyncio.Queue[object], task: asyncio.Task[None]
                 ) -> AsyncIterator[bytes]:
    """The events as NDJSON lines; `task` (the build) is held here, so that it
    lives as long as the response."""
    while (event := await queue.get()) is not _END:
        yield json.dumps(event).encode() + b"\n"
    await task


@router.post("/boxes/{ref}/commit", name="commit", response_model=Envelope[ImageInfo],
             summary="Make an image of a box's disk and config (a running box is paused "
             "for the copy).")
async def commit(ref: str, body: CommitBody, rt: RT) -> dict[str, Any]:
    box = await rt.boxes.get(ref)
    img = await box.commit(body.name, changes=body.changes)
    return envelope("commit", 0, image_info(img))
