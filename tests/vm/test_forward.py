"""Published ports and connections into a box over the agent channel: a
forward outlives the command that made the box, a taken port fails before
anything is made, `port` speaks Docker's format, `connect` pipes stdio."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import microbox
from tests.vm.helpers import ECHO, echo_through, free_port, listening, mb


@pytest.fixture
def web(home: Path) -> Iterator[int]:
    port = free_port()
    r = mb("run", "-d", "--name", "web", "-p", f"{port}:7000", "busybox", "--", *ECHO)
    assert r.returncode == 0, r.stderr
    try:
        assert mb("exec", "web", "--", *listening(7000)).returncode == 0
        yield port
    finally:
        mb("rm", "-f", "web")


def test_a_forward_outlives_the_cli_that_made_it(web: int) -> None:
    # the `run -d` process has exited; the box's shim serves the port
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    assert echo_through(web, payload) == payload
    assert echo_through(web, b"again\n") == b"again\n"
    r = mb("port", "web")
    assert (r.returncode, r.stdout) == (0, f"7000/tcp -> 127.0.0.1:{web}\n".encode())
    r = mb("port", "web", "7000")
    assert r.stdout == f"127.0.0.1:{web}\n".encode()
    r = mb("port", "web", "81")
    assert r.returncode == 1 and r.stderr == b"microbox: box 'web' publishes no port 81.\n"


def test_a_taken_port_fails_before_anything_is_made(web: int) -> None:
    for verb in (["run", "--rm"], ["create"]):
        r = mb(*verb, "--name", "second", "-p", f"{web}:7000", "busybox")
        assert r.returncode == 2, r.stderr
        assert r.stderr == (f"microbox: host port 127.0.0.1:{web} is already in use; publish "
                            "another with -p OTHER:7000.\n").encode()
    assert b"second" not in mb("ls", "-a").stdout


def test_a_published_port_is_checked_again_at_start(home: Path) -> None:
    port = free_port()
    assert mb("create", "--name", "later", "-p", f"{port}:7000", "busybox").returncode == 0
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", port))
            taken.listen()
            r = mb("start", "later")
            assert r.returncode == 2 and b"already in use" in r.stderr
        assert b"stopped" in mb("ls", "-a").stdout or b"created" in mb("ls", "-a").stdout
    finally:
        mb("rm", "-f", "later")


def test_bad_publish_values_are_refused(home: Path) -> None:
    for bad, says in (("80", "a host port is required"), ("x:80", "bad host port"),
                      ("8080:70000", "bad guest port"), ("8080:80/udp", "only tcp"),
                      ("nohost:8080:80", "bad host address")):
        r = mb("create", "-p", bad, "busybox")
        assert r.returncode == 2 and says.encode() in r.stderr, (bad, r.stderr)
    assert mb("ls", "-a", "-q").stdout == b""


def test_connect_pipes_stdio_to_a_guest_port(home: Path) -> None:
    with microbox.Runtime() as rt:
        box = rt.boxes.run("busybox", name="conn", memory_mib=128)
        try:
            box.exec(ECHO, detach=True)
            box.run(listening(7000), timeout=30)
            r = mb("connect", "conn", "7000", input=b"hello through the agent\n")
            assert (r.returncode, r.stdout) == (0, b"hello through the agent\n"), r.stderr
            r = mb("connect", "conn", "7001", input=b"")
            assert r.returncode == 1 and b"refused" in r.stderr
            conf = mb("ssh-config", "conn").stdout.decode()
            assert "Host conn\n" in conf and "ProxyCommand" in conf and "connect conn 22" in conf
        finally:
            box.delete(force=True)


def test_shell_runs_the_login_shell(home: Path) -> None:
    with microbox.Runtime() as rt:
        box = rt.boxes.run("busybox", name="sh2", memory_mib=128)
        try:
            r = mb("shell", "sh2", input=b"echo in-shell; exit 5\n")
            assert r.returncode == 5 and r.stdout.endswith(b"in-shell\n"), r
            r = mb("ssh", "sh2", input=b"exit 3\n")
            assert r.returncode == 3
        finally:
            box.delete(force=True)


def test_asyncio_connect_and_shell(home: Path) -> None:
    async def main() -> None:
        async with microbox.AsyncRuntime() as rt:
            box = await rt.boxes.run("busybox", name="aconn", memory_mib=128)
            try:
                await box.exec(ECHO, detach=True)
                await box.run(listening(7000), timeout=30)
                conn = await box.connect(7000)
                await conn.send(b"ping over asyncio\n")
                await conn.close_write()
                got = b"".join([chunk async for chunk in conn.receive()])
                assert got == b"ping over asyncio\n"
                sh = await box.shell(tty=False)
                r = await sh.collect(b"echo from-the-shell; exit 4\n")
                assert (r.exit_code, r.stdout) == (4, b"from-the-shell\n")
            finally:
                await box.delete(force=True)

    asyncio.run(main())
