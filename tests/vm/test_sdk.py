"""The Python SDK on real boxes: teardown on every path, streaming, files, async."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import signal
from pathlib import Path

import pytest

import microbox
from microbox.errors import AgentError, ExecFailed
from tests.conftest import qemu_pids


def test_with_block_tears_down_on_exception(home: Path) -> None:
    rt = microbox.Runtime()
    with pytest.raises(RuntimeError, match="boom"), rt.boxes.run("busybox") as box:
        assert box.run(["true"]).exit_code == 0
        raise RuntimeError("boom")
    assert qemu_pids(home) == set()
    rt.close()


def test_streaming_stdin_signal_and_results() -> None:
    with microbox.Runtime() as rt, rt.boxes.run("busybox") as box:
        r = box.run(["sh", "-c", "cat; echo done >&2; exit 3"], input=b"abc")
        assert (r.exit_code, r.stdout, r.stderr) == (3, b"abc", b"done\n")
        ex = box.exec(["sh", "-c", "echo ready; sleep 100"])
        events = ex.events()
        assert next(events) == ("stdout", b"ready\n")
        ex.signal(signal.SIGKILL)
        status = ex.wait()
        assert (status.signal, status.exit_code) == (9, 137)
        with pytest.raises(ExecFailed) as err:
            box.exec(["no-such-command"])
        assert err.value.exit_code == 127
        t = box.exec(["sh", "-c", "tty; stty size"], tty=True, rows=33, cols=101)
        out = b"".join(d for _, d in t.events())
        assert b"/dev/pts/" in out and b"33 101" in out


def test_stdin_in_odd_sized_writes_arrives_whole() -> None:
    """Writes of every size from 1 byte to past a frame, so the guest's reads of
    its port end in the middle of the kernel's receive buffers as well as at
    their ends (the kernel patch that reads many buffers at once)."""
    rng = random.Random(7)
    data = rng.randbytes(6 << 20)
    with microbox.Runtime() as rt, rt.boxes.run("busybox") as box:
        ex = box.exec(["sha256sum"], stdin=True)
        at = 0
        while at < len(data):
            n = rng.choice((1, 7, 4095, 4096, 4097, 65535, 65536, 70001, rng.randrange(1, 200000)))
            ex.write(data[at:at + n])
            at += n
        ex.close_stdin()
        out = b"".join(d for name, d in ex.events() if name == "stdout")
        assert ex.status is not None and ex.status.exit_code == 0
        assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_put_get_keep_bytes_and_mode(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 1000 + b"tail"
    src = tmp_path / "blob"
    src.write_bytes(payload)
    src.chmod(0o751)
    with microbox.Runtime() as rt, rt.boxes.run("busybox") as box:
        box.put(src, "/root/deep/dir/blob")
        r = box.run(["stat", "-c", "%a %s", "/root/deep/dir/blob"])
        assert r.stdout == f"751 {len(payload)}\n".encode()
        dest = tmp_path / "back"
        box.get("/root/deep/dir/blob", dest)
        assert dest.read_bytes() == payload and (dest.stat().st_mode & 0o777) == 0o751
        buf = io.BytesIO()
        box.get("/etc/passwd", buf)
        assert buf.getvalue().startswith(b"root:x:0:0")
        with pytest.raises(AgentError, match="not_found"):
            box.get("/nope", io.BytesIO())
        assert not (tmp_path / ".back.microbox-tmp").exists()


def test_async_twin(home: Path) -> None:
    async def main() -> tuple[int, bytes, list[tuple[str, bytes]]]:
        async with microbox.AsyncRuntime() as rt, await rt.boxes.run("busybox") as box:
            r = await box.run(["echo", "async"])
            ex = await box.exec(["sh", "-c", "echo a; echo b >&2"])
            events = [e async for e in ex.events()]
            return r.exit_code, r.stdout, events

    code, out, events = asyncio.run(main())
    assert (code, out) == (0, b"async\n")
    assert sorted(events) == [("stderr", b"b\n"), ("stdout", b"a\n")]
    assert qemu_pids(home) == set()


def test_large_input_and_output_do_not_deadlock() -> None:
    data = bytes(range(256)) * (24 * 1024)  # 6 MiB, past the agent's 4 MiB stdin queue
    with microbox.Runtime() as rt, rt.boxes.run("busybox") as box:
        r = box.run(["cat"], input=data)
        assert r.exit_code == 0 and r.stdout == data
