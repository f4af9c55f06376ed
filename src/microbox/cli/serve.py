"""`microbox serve`: the HTTP API (FastAPI + uvicorn, imported only here)."""

from __future__ import annotations

import socket
from pathlib import Path

import click

from microbox.cli.common import guarded
from microbox.cli.output import Out
from microbox.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470


@click.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on; a non-loopback one needs --token-file.")
@click.option("--port", type=int, help=f"TCP port [default: {DEFAULT_PORT}].")
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False),
              help="Listen on this Unix socket (mode 0600, no token needed) instead of TCP.")
@click.option("--token-file", type=click.Path(dir_okay=False),
              help="Bearer token clients must send [default: made on first use in the "
                   "data dir].")
@click.option("-v", "--verbose", is_flag=True, help="Log every request.")
def serve(host: str, port: int | None, socket_path: str | None, token_file: str | None,
          verbose: bool) -> None:
    """Serve the HTTP API (docs/api.md) until interrupted."""
    out = Out("serve", False, verbose)

    def body() -> None:
        from microbox.api import server

        if socket_path is not None and (port is not None or host != DEFAULT_HOST):
            raise UsageError("--socket cannot be combined with --host or --port; pick one")
        if socket_path is None and not server.is_loopback(host) and token_file is None:
            raise UsageError(f"refusing to serve on non-loopback {host} without a token",
                             f"microbox serve --host {host} --token-file PATH")
        if token_file is not None:
            token: str | None = server.read_token(Path(token_file))
        elif socket_path is None:
            token = server.ensure_token(server.default_token_path())
        else:
            token = None  # the socket's 0600 mode is the access control
        if socket_path is not None:
            sock = server.bind_unix(Path(socket_path))
            where = f"unix:{socket_path}"
        else:
            sock = server.bind_tcp(host, DEFAULT_PORT if port is None else port)
            where = "http://{}:{}".format(*sock.getsockname()[:2])
        _serve(out, sock, token, where, token_file)

    guarded(out, body)


def _serve(out: Out, sock: socket.socket, token: str | None, where: str,
           token_file: str | None) -> None:
    from microbox.api import create_app, server
    from microbox.sdk import Runtime
    from microbox.sdk.aio import AsyncRuntime

    auth = ("no token (socket mode 0600)" if token is None
            else f"bearer token in {token_file or server.default_token_path()}")
    out.info(f"microbox: serving the API on {where}; {auth}")
    # the app closes the runtime as it shuts down
    server.run(create_app(AsyncRuntime(Runtime(log=out.log)), token), sock,
               access_log=out.verbose)
