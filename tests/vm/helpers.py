"""Running the real CLI in a subprocess, and reaching a box's published ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

CLI = [sys.executable, "-m", "microbox"]


def mb(*args: str, input: bytes | None = None, timeout: float = 120,
       **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *args], input=input, capture_output=True, timeout=timeout,
                          env=os.environ.copy(), **kw)


def spawn(*args: str, **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=os.environ.copy(), **kw)


def mb_tty(*args: str, answer: bytes, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI with a terminal on stdin and type `answer` into it."""
    import pty

    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([*CLI, *args], stdin=slave, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=os.environ.copy())
        os.write(master, answer)
        out, err = p.communicate(timeout=timeout)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)
    finally:
        os.close(slave)
        os.close(master)


ECHO = ["nc", "-ll", "-p", "7000", "-e", "cat"]  # a persistent echo server


def listening(port: int) -> list[str]:
    """A guest command that returns once something listens on TCP `port`."""
    return ["sh", "-c", f"until grep -qiE ':{port:04X} [0-9A-F]+:0000 0A' /proc/net/tcp "
            f"/proc/net/tcp6 2>/dev/null; do usleep 10000; done"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def echo_through(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := s.recv(65536):
            got += chunk
    return bytes(got)
