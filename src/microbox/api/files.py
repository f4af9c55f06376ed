"""Files in and out of a box, and its console log."""

from __future__ import annotations

import asyncio
import io
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO, Annotated, Any, TypeVar, cast

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from microbox.api.boxes import RT
from microbox.api.guard import TooLarge
from microbox.api.models import Copied, Envelope, Logs, Uploaded
from microbox.envelope import envelope

T = TypeVar("T")

SPOOL_MEMORY = 1 << 20  # a download past this much goes to a temporary file, not memory
READ_CHUNK = 64 * 1024

router = APIRouter(tags=["files"])
GuestPath = Annotated[str, Query(min_length=1, description="Absolute path in the box.")]


class _BodyReader:
    """The request body as a blocking binary file for Box.put, read on one of the
    SDK's worker threads from the event loop's stream (the loop runs each read)."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._loop = asyncio.get_running_loop()
        self._buf = bytearray()
        self._done = False
        self.size = 0

    async def _next(self) -> bytes:
        return await self._chunks.__anext__()

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buf) < n):
            try:
                self._buf += asyncio.run_coroutine_threadsafe(self._next(), self._loop).result()
            except StopAsyncIteration:
                self._done = True
        n = len(self._buf) if n < 0 else n
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self.size += len(out)
        return out


@router.put("/boxes/{ref}/files", name="cp", response_model=Envelope[Uploaded],
            summary="Upload the request body (streamed) to `path` in the box.",
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}}})
async def upload(ref: str, path: GuestPath, request: Request, rt: RT,
                 mode: Annotated[str, Query(pattern=r"^0?[0-7]{1,4}$",
                                            description="Octal, e.g. 0755.")] = "0644",
                 ) -> dict[str, Any]:
    box = await rt.boxes.shared(ref)
    reader = _BodyReader(request.stream())
    bits = int(mode, 8) & 0o7777
    await box.put(reader, path, bits)  # type: ignore[arg-type]  # a read()-only file
    return envelope("cp", 0, {"path": path, "size": reader.size, "mode": bits})


@router.get("/boxes/{ref}/files", name="cp", response_class=StreamingResponse,
            summary="Download `path` from the box; its mode is in X-Microbox-Mode (octal).",
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "The file's bytes."}})
async def download(ref: str, path: GuestPath, request: Request, rt: RT) -> Response:
    box = await rt.boxes.shared(ref)
    limit = request.app.state.upload_limit
    mode, spool, size = await _spool(lambda f: box.get(path, f, limit))
    return StreamingResponse(_spooled(spool), media_type="application/octet-stream",
                             headers={"X-Microbox-Mode": f"{mode:04o}",
                                      "Content-Length": str(size)})


async def _spool(fill: Callable[[IO[bytes]], Awaitable[T]]) -> tuple[T, IO[bytes], int]:
    """What `fill` returns, and the spool it wrote (rewound) with its size: a
    download is whole before its response starts, so its errors are envelopes."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
    try:
        result = await fill(spool)
        size = spool.tell()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return result, spool, size


async def _spooled(spool: IO[bytes]) -> AsyncIterator[bytes]:
    """The spool's chunks: a local file (in memory up to SPOOL_MEMORY) read in
    place, each read far shorter than a hop through a thread."""
    try:
        while chunk := spool.read(READ_CHUNK):
            yield chunk
    finally:
        spool.close()


@router.put("/boxes/{ref}/archive", name="cp", response_model=Envelope[Copied],
            summary="Extract the tar in the request body (streamed) into the directory `path` "
                    "in the box, as `microbox cp - BOX:PATH`.",
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_tar(ref: str, path: GuestPath, request: Request, rt: RT) -> dict[str, Any]:
    box = await rt.boxes.shared(ref)
    reader = _BodyReader(request.stream())
    report = await box.copy_in_tar(reader, path)  # type: ignore[arg-type]  # read()-only
    return envelope("cp", 0, report.to_json())


class _Capped(io.RawIOBase):
    """A spool that refuses more than `limit` bytes."""

    def __init__(self, spool: IO[bytes], limit: int, path: str) -> None:
        super().__init__()
        self.spool, self.limit, self.path, self.size = spool, limit, path, 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise TooLarge(f"the tar of {self.path} is over the {self.limit}-byte download "
                           "limit; copy a smaller part of the tree")
        return self.spool.write(data)


@router.get("/boxes/{ref}/archive", name="cp", response_class=StreamingResponse,
            summary="A tar of `path` in the box (its top entry named after it), as "
                    "`microbox cp BOX:PATH -`; the box made it, so extract it as untrusted.",
            responses={200: {"content": {"application/x-tar": {}},
                             "description": "The tar stream."}})
async def download_tar(ref: str, path: GuestPath, request: Request, rt: RT) -> Response:
    box = await rt.boxes.shared(ref)
    limit = request.app.state.upload_limit
    _, spool, size = await _spool(
        lambda f: box.copy_out_tar(path, cast(IO[bytes], _Capped(f, limit, path))))
    return StreamingResponse(_spooled(spool), media_type="application/x-tar",
                             headers={"Content-Length": str(size)})


@router.get("/boxes/{ref}/export", name="export", response_class=StreamingResponse,
            summary="A tar of the box's root file system, as `microbox export BOX` (the root "
                    "disk only; names start with ./); the box made it, so extract it as "
                    "untrusted.",
            responses={200: {"content": {"application/x-tar": {}},
                             "description": "The tar stream."}})
async def export(ref: str, request: Request, rt: RT) -> Response:
    box = await rt.boxes.shared(ref)
    limit = request.app.state.upload_limit
    _, spool, size = await _spool(
        lambda f: box.export(cast(IO[bytes], _Capped(f, limit, "/"))))
    return StreamingResponse(_spooled(spool), media_type="application/x-tar",
                             headers={"Content-Length": str(size)})


@router.get("/boxes/{ref}/logs", name="logs", response_model=Envelope[Logs],
            summary="The console log (last `tail` lines); with follow, a live text stream.",
            responses={200: {"content": {"text/plain": {}}}})
async def logs(ref: str, rt: RT, tail: Annotated[int | None, Query(ge=0)] = None,
               follow: bool = False) -> Response:
    box = await rt.boxes.get(ref)
    if not follow:
        data = await box.logs(tail)
        return JSONResponse(envelope("logs", 0, {"log": data.decode(errors="replace")}))
    stop = threading.Event()  # set when the client goes away: the follow ends
    return StreamingResponse(box.follow_logs(tail, stop=stop),
                             media_type="text/plain; charset=utf-8")
