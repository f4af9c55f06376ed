"""What every request passes first: the bearer token and the body size limits."""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from microbox.envelope import envelope
from microbox.errors import MicroboxError, UsageError

JSON_LIMIT = 1 << 20  # request bodies other than uploads
UPLOAD_LIMIT = 1 << 30  # PUT /boxes/{ref}/files and /archive, streamed to the guest


class Unauthorized(MicroboxError):
    type = "unauthorized"


class TooLarge(MicroboxError):
    type = "too_large"


class Invalid(UsageError):
    """Malformed request input (HTTP 422)."""

    type = "invalid_request"


def check_token(conn: HTTPConnection, token: str | None) -> None:
    """Raise Unauthorized unless the request carries `Authorization: Bearer <token>`
    (compared in constant time). No token configured means none is needed."""
    if token is None:
        return
    scheme, _, given = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             token.encode()):
        raise Unauthorized("missing or wrong bearer token",
                           "microbox serve --token-file PATH",
                           "and send 'Authorization: Bearer <token>' from that file")


def is_upload(scope: Scope) -> bool:
    return bool(scope.get("method") == "PUT"
                and str(scope.get("path", "")).endswith(("/files", "/archive")))


class BodyLimit:
    """413 with the envelope for a body over its limit: at once when Content-Length
    says so, else as soon as the streamed bytes pass it (the app's own response is
    then dropped)."""

    def __init__(self, app: ASGIApp, json_limit: int = JSON_LIMIT,
                 upload_limit: int = UPLOAD_LIMIT) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if is_upload(scope) else self.json_limit
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _too_large(send, limit)
            return
        seen = 0
        over = False
        started = False

        async def limited_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not over:
                raise  # else: the app failed on the cut-off body; the answer is 413
        if over and not started:
            await _too_large(send, limit)


async def _too_large(send: Send, limit: int) -> None:
    err = TooLarge(f"the request body is over the {limit}-byte limit; send less, or upload "
                   "files with PUT /boxes/{ref}/files")
    await send_json(send, 413, envelope("request", err.exit_code, None, err))


async def send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})
