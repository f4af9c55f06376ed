"""Errors as HTTP answers: the envelope, with a status code per error type."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection

from microbox.envelope import envelope
from microbox.errors import MicroboxError

STATUS = {
    "usage": 400, "invalid_spec": 422, "invalid_request": 422, "exec": 422,
    "unauthorized": 401, "not_found": 404, "state": 409, "refused": 409, "too_large": 413,
    "host": 500, "build": 500, "error": 500, "agent": 502, "guest": 409, "vm": 503, "timeout": 504,
    "connect": 502, "image_lacks": 409, "workspace": 409, "pack": 422, "pack_version": 422,
    "disk_full": 507, "corrupt_database": 500,
}


def status_of(err: MicroboxError) -> int:
    return STATUS.get(err.type, 500)


def command_of(conn: HTTPConnection) -> str:
    """The envelope's `command`: the route's name (the CLI command it mirrors)."""
    route = conn.scope.get("route")
    return str(getattr(route, "name", None) or "request")


def failure(conn: HTTPConnection, err: MicroboxError) -> JSONResponse:
    return JSONResponse(envelope(command_of(conn), err.exit_code, None, err),
                        status_code=status_of(err))
