"""The HTTP API's application: factory, auth, the error envelope, limits.

Every route is a thin call into the SDK (microbox.sdk); nothing here orchestrates
boxes. The routes are coroutines over the SDK's asyncio face (AsyncRuntime): its
one bounded thread pool runs every blocking call, and no route runs on anyio's
or the event loop's own threads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from microbox import __version__
from microbox.api import boxes, builds, execute, files, observe, pools, snapshots
from microbox.api.guard import JSON_LIMIT, UPLOAD_LIMIT, BodyLimit, Invalid, check_token
from microbox.api.models import Envelope, Health
from microbox.api.replies import failure
from microbox.envelope import envelope
from microbox.errors import HostError, MicroboxError, NotFound, UsageError
from microbox.sdk.aio import AsyncRuntime

_bearer = HTTPBearer(auto_error=False, description="The token `microbox serve` wrote "
                     "into its token file.")


async def require_token(
    conn: HTTPConnection,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    # async: a sync dependency costs each request a hop through the thread pool
    check_token(conn, conn.app.state.token)


def create_app(runtime: AsyncRuntime, token: str | None, *, json_limit: int = JSON_LIMIT,
               upload_limit: int = UPLOAD_LIMIT) -> FastAPI:
    """The API over `runtime`, which it closes when it shuts down; `token` None
    means no auth (a 0600 Unix socket)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await runtime.close()  # waits for calls still running

    app = FastAPI(title="microbox", version=__version__, lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None,  # served below, with auth
                  description="Disposable, hardware-isolated Linux microVMs over HTTP. "
                  "See docs/api.md.")
    app.state.runtime = runtime
    app.state.token = token
    app.state.upload_limit = upload_limit
    app.add_middleware(BodyLimit, json_limit=json_limit, upload_limit=upload_limit)

    guarded = [Depends(require_token)]
    for router in (boxes.router, builds.router, execute.router, files.router, observe.router,
                   pools.router, snapshots.router):
        app.include_router(router, dependencies=guarded)
    app.include_router(execute.ws_router)  # checks the token itself, before accepting

    @app.get("/health", name="health", summary="Liveness; needs no token.",
             response_model=Envelope[Health])
    async def health() -> dict[str, Any]:
        return envelope("health", 0, {"status": "ok", "version": __version__})

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.exception_handler(MicroboxError)
    async def on_error(request: Request, exc: MicroboxError) -> JSONResponse:
        return failure(request, exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return failure(request, Invalid(_describe(exc), "GET /openapi.json",
                                        "for the expected shape"))

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        err: MicroboxError
        if exc.status_code == 404:
            err = NotFound(f"no route {request.method} {request.url.path}", "GET /openapi.json")
        else:
            err = UsageError(str(exc.detail))
        response = failure(request, err)
        response.status_code = exc.status_code
        return response

    @app.exception_handler(OSError)
    async def on_os_error(request: Request, exc: OSError) -> JSONResponse:
        text = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        return failure(request, HostError(text))

    return app


def _describe(exc: RequestValidationError) -> str:
    """One sentence naming the first bad field."""
    errors = exc.errors()
    if not errors:
        return "the request is malformed"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"bad request field {where}: {first.get('msg', 'invalid')}{more}"
