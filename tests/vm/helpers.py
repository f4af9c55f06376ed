"""Running the real CLI in a subprocess."""

from __future__ import annotations

import os
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
