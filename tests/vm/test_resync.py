"""A client SIGKILLed in the middle of a frame must not break the port for the next one.

The next client connects before the first dies (it waits in QEMU's listen
backlog), so the guest sees the disconnect and the reconnect back to back and
the agent cannot tell them apart by an end-of-file: the framing itself has to
recover (docs/protocol.md, "Losing and regaining sync").

A running box's ports belong to its shim, so the test kills the shim first (as a
crash would), plays a raw port client, and then lets the next command start a
new shim, whose own handshake must find its way through the torn port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from microbox import locks
from microbox.agent import ops
from microbox.agent.channel import Channel, handshake
from microbox.core import shim
from microbox.core.boxdir import BoxDir
from microbox.vmm import process
from tests.vm.helpers import mb

# A client of port 0 that leaves a frame half-written ("torn") or an exec
# flooding output it never reads ("flood"), says "ready" and waits to be killed.
CLIENT = r"""
import fcntl, os, socket, struct, sys, termios, time
from pathlib import Path
from microbox.agent.channel import handshake
from microbox.agent.ops import ExecRequest
from microbox.agent.protocol import T, encode
d, mode = Path(sys.argv[1]), sys.argv[2]
lock = os.open(d / "port0.lock", os.O_RDWR)
fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(str(d / "port0.sock"))
handshake(sock, None, time.monotonic() + 60, None, lambda: "")
if mode == "torn":
    frame = encode(T.EXEC, 5, ExecRequest(argv=["sh", "-c", "echo never"]).payload())
    sock.sendall(frame[: len(frame) // 2])
else:
    sock.sendall(encode(T.EXEC, 5, ExecRequest(argv=["yes", "stale output " * 100]).payload()))
    # Nothing reads the output: wait until it backs up in our socket, so that the
    # agent is blocked in a write, which our death cuts.
    deadline = time.monotonic() + 60
    while struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, bytes(4)))[0] < 65536:
        if time.monotonic() > deadline:
            sys.exit("the flood never filled the socket")
        time.sleep(0.01)
print("ready", flush=True)
time.sleep(600)
"""


def _client(d: Path, mode: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", CLIENT, str(d), mode],
                            stdout=subprocess.PIPE, env=os.environ.copy())


@pytest.mark.parametrize("mode", ["torn", "flood"])
def test_client_killed_mid_frame(home: Path, mode: str) -> None:
    assert mb("create", "--start", "--name", f"rs-{mode}", "busybox").returncode == 0
    box_id = json.loads(mb("inspect", f"rs-{mode}", "--json").stdout)["data"]["id"]
    d = home / "boxes" / box_id
    old = shim.pid(BoxDir(d))
    assert old is not None
    os.kill(old, signal.SIGKILL)
    assert process.wait_exit(old, 10)
    client = _client(d, mode)
    try:
        assert client.stdout is not None and client.stdout.readline() == b"ready\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(d / "port0.sock"))  # queued behind the live client
            os.kill(client.pid, signal.SIGKILL)
            client.wait()
            lock = locks.try_acquire(d / "port0.lock")  # the dead client's is free
            assert lock is not None
            reply = handshake(sock, None, time.monotonic() + 30, None, lambda: "")
            ch = Channel(sock.dup(), lock, reply)
            try:
                ops.ping(ch, b"after the kill")
            finally:
                ch.close()
    finally:
        client.kill()
        client.wait()
    # killed mid-frame again, and this time the box's next shim is the next client
    client = _client(d, mode)
    assert client.stdout is not None and client.stdout.readline() == b"ready\n"
    client.kill()
    client.wait()
    r = mb("exec", f"rs-{mode}", "--", "echo", "still fine")
    assert r.returncode == 0 and r.stdout == b"still fine\n", r.stderr
    assert mb("delete", "-f", f"rs-{mode}").returncode == 0
