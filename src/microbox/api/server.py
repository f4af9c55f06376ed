"""Serving the API: the token file, the listening socket, uvicorn."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import socket
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from microbox import paths
from microbox.errors import UsageError

TOKEN_FILE = "api-token"
GRACE = 5  # seconds open streams (a log follow) get when the server stops


def default_token_path() -> Path:
    return paths.home() / TOKEN_FILE


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read the token file {path}: {exc.strerror}; "
                         "give a readable file with --token-file") from None
    if not token:
        raise UsageError(f"the token file {path} is empty; write a token into it")
    return token


def ensure_token(path: Path) -> str:
    """The token in `path`, made (random, mode 0600) if the file does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return read_token(path)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and
    # without it every answer written in two parts waits ~40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def bind_unix(path: Path) -> socket.socket:
    """A listening Unix socket with mode 0600 from its first moment (umask at bind)."""
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: nobody listens on it
        else:
            raise UsageError(f"another server already listens on {path}; stop it or pick "
                             "another --socket")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    return sock


def server(app: FastAPI, access_log: bool = False) -> uvicorn.Server:
    config = uvicorn.Config(app, lifespan="on", ws="websockets-sansio", log_level="info",
                            access_log=access_log, timeout_graceful_shutdown=GRACE)
    return uvicorn.Server(config)


def run(app: FastAPI, sock: socket.socket, access_log: bool = False) -> None:
    """Serve until SIGINT/SIGTERM; the socket is closed (and unlinked) after."""
    try:
        server(app, access_log).run(sockets=[sock])
    finally:
        name = sock.getsockname()
        sock.close()
        if sock.family == socket.AF_UNIX and isinstance(name, str) and name:
            with contextlib.suppress(OSError):
                os.unlink(name)
