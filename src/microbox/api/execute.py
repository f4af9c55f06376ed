"""Running commands: to completion (JSON), streamed (NDJSON), interactive (WebSocket).

Wire formats are in docs/api.md. Every route uses the server's shared handle on
the box (rt.boxes.shared), whose one agent session multiplexes all executions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from microbox.agent.ops import ExitStatus
from microbox.api.boxes import RT
from microbox.api.guard import Invalid, check_token
from microbox.api.models import Envelope, ExecBody, RunBody, RunResult, WsStart
from microbox.api.replies import failure, status_of
from microbox.envelope import envelope
from microbox.errors import AgentError, MicroboxError
from microbox.sdk.aio import AsyncExecution, AsyncRuntime

RUN_LIMIT = 8 << 20  # bytes of each stream /run keeps (the rest is counted as dropped)
STDOUT, STDERR = 1, 2  # first byte of a binary WebSocket message from the server

router = APIRouter(tags=["exec"])
ws_router = APIRouter(tags=["exec"])


def encode(data: bytes, encoding: str) -> tuple[str, str]:
    """(text, "utf-8") where it decodes and `encoding` allows, else (base64, "base64")."""
    if encoding == "auto":
        try:
            return data.decode(), "utf-8"
        except UnicodeDecodeError:
            pass
    return base64.b64encode(data).decode(), "base64"


def exit_fields(status: ExitStatus) -> dict[str, Any]:
    return {"exit_code": status.reported_code,
            "code": status.code, "signal": status.signal, "timed_out": status.timed_out}


def error_event(command: str, err: MicroboxError) -> dict[str, Any]:
    return {"type": "error", **envelope(command, err.exit_code, None, err)}


def _stdin(body: RunBody) -> bytes | None:
    if body.stdin is None:
        return None
    if body.stdin_encoding == "utf-8":
        return body.stdin.encode()
    try:
        return base64.b64decode(body.stdin, validate=True)
    except ValueError:
        raise Invalid("stdin is not valid base64; send it encoded or use stdin_encoding "
                      "utf-8") from None


async def _start(rt: AsyncRuntime, ref: str, body: ExecBody, stdin: bool, tty: bool = False,
                 rows: int = 24, cols: int = 80) -> AsyncExecution:
    box = await rt.boxes.shared(ref)
    return await box.exec(body.command, env=body.env, cwd=body.cwd, user=body.user,
                          stdin=stdin, tty=tty, rows=rows, cols=cols, timeout=body.timeout)


async def _feed(ex: AsyncExecution, data: bytes) -> None:
    with contextlib.suppress(AgentError):  # the process may exit before reading it all
        await ex.write(data)
        await ex.close_stdin()


@router.post("/boxes/{ref}/run", name="run", response_model=Envelope[RunResult],
             summary="Run a command to completion; its stdout, stderr and exit code.")
async def run(ref: str, body: RunBody, rt: RT) -> JSONResponse:
    box = await rt.boxes.shared(ref)
    r = await box.run(body.command, input=_stdin(body), env=body.env, cwd=body.cwd,
                      user=body.user, timeout=body.timeout, limit=RUN_LIMIT)
    out, enc_out = encode(r.stdout, body.encoding)
    err, enc_err = encode(r.stderr, body.encoding)
    if "base64" in (enc_out, enc_err):  # one encoding for both: base64 unless both decode
        out, enc_out = encode(r.stdout, "base64")
        err, _ = encode(r.stderr, "base64")
    return JSONResponse(envelope("run", r.status.reported_code, {
        **exit_fields(r.status), "encoding": enc_out, "stdout": out, "stderr": err,
        "stdout_dropped": r.stdout_dropped, "stderr_dropped": r.stderr_dropped}))


@router.post("/boxes/{ref}/exec", name="exec", response_class=StreamingResponse,
             summary="Run a command and stream its output live as NDJSON events.",
             responses={200: {"content": {"application/x-ndjson": {}},
                              "description": "One JSON event a line: start, stdout, stderr, "
                              "then exit (or error). See docs/api.md."}})
async def exec_stream(ref: str, body: RunBody, rt: RT) -> StreamingResponse:
    data = _stdin(body)
    ex = await _start(rt, ref, body, data is not None)
    feeding = asyncio.create_task(_feed(ex, data)) if data is not None else None
    return StreamingResponse(_ndjson(ex, body.encoding, feeding),
                             media_type="application/x-ndjson")


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode() + b"\n"


async def _ndjson(ex: AsyncExecution, encoding: str,
                  feeding: asyncio.Task[None] | None) -> AsyncIterator[bytes]:
    """The events as NDJSON lines; `feeding` (the stdin writer) is held here, so
    that it lives as long as the response."""
    yield _line({"type": "start", "pid": ex.pid})
    try:
        async with contextlib.aclosing(ex.events()) as events:  # type: ignore[type-var]
            async for name, data in events:
                text, enc = encode(data, encoding)
                yield _line({"type": name, "data": text, "encoding": enc})
    except MicroboxError as err:
        yield _line(error_event("exec", err))
        return
    assert ex.status is not None
    yield _line({"type": "exit", **exit_fields(ex.status)})


@ws_router.websocket("/boxes/{ref}/exec/ws", name="exec")
async def exec_ws(ws: WebSocket, ref: str) -> None:
    """Interactive exec: stdin, signals, resize and a TTY (docs/api.md)."""
    try:
        check_token(ws, ws.app.state.token)
    except MicroboxError as err:
        await ws.send_denial_response(failure(ws, err))
        return
    await ws.accept()
    try:
        start = WsStart.model_validate(await ws.receive_json())
        ex = await _start(ws.app.state.runtime, ref, start, True, start.tty, start.rows,
                          start.cols)
    except WebSocketDisconnect:
        return
    except (ValidationError, ValueError) as exc:
        bad = Invalid(f"the first message must be an exec request: {exc}".splitlines()[0],
                      "GET /openapi.json")
        await _fail(ws, bad, status_of(bad))
        return
    except MicroboxError as exc:
        await _fail(ws, exc, status_of(exc))
        return
    await ws.send_json({"type": "started", "pid": ex.pid})
    async with anyio.create_task_group() as tg:
        tg.start_soon(_pump_input, ws, ex)
        try:
            async with contextlib.aclosing(ex.events()) as events:  # type: ignore[type-var]
                async for name, data in events:
                    await ws.send_bytes(bytes([STDOUT if name == "stdout" else STDERR]) + data)
            assert ex.status is not None
            await ws.send_json({"type": "exit", **exit_fields(ex.status)})
            await ws.close(1000)
        except MicroboxError as exc:
            await _fail(ws, exc, status_of(exc))
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client went away; the process was killed when its events were closed
        tg.cancel_scope.cancel()


async def _fail(ws: WebSocket, err: MicroboxError, status: int) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await ws.send_json(error_event("exec", err))
        await ws.close(4000 + status)


async def _pump_input(ws: WebSocket, ex: AsyncExecution) -> None:
    """Client messages: binary = stdin bytes; text = JSON control (eof, signal, resize)."""
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                await ex.kill()
                return
            if msg.get("bytes") is not None:
                await ex.write(msg["bytes"])
                continue
            try:
                control = json.loads(msg.get("text") or "{}")
                kind = control.get("type")
                if kind == "eof":
                    await ex.close_stdin()
                elif kind == "signal":
                    await ex.signal(int(control.get("signal", 15)))
                elif kind == "resize":
                    await ex.resize(int(control["rows"]), int(control["cols"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a malformed control message is ignored, as documented
    except MicroboxError:
        return  # the process ended: its stdin is gone
