"""One process drives many boxes at once, from one event loop or from many
threads: every result right, nothing left behind, cancellation kills the
guest process it was waiting on."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

import microbox
from microbox.sdk import Box
from tests.conftest import qemu_pids

BOXES = 20
EXECS = 100


def _script(n: int) -> list[str]:
    """A command whose output and exit code both depend on n."""
    return ["sh", "-c", f"echo out-{n}; echo err-{n} >&2; exit {n % 7}"]


def _check(n: int, r: microbox.Result) -> None:
    assert (r.exit_code, r.stdout, r.stderr) == (n % 7, f"out-{n}\n".encode(),
                                                  f"err-{n}\n".encode()), n


def test_twenty_boxes_and_a_hundred_execs_on_one_event_loop(home: Path) -> None:
    async def main() -> None:
        async with microbox.AsyncRuntime() as rt:
            made = await asyncio.gather(*(rt.boxes.run("busybox", memory_mib=128,
                                                 labels={"test": "gather"})
                                          for _ in range(BOXES)), return_exceptions=True)
            boxes = [b for b in made if not isinstance(b, BaseException)]
            try:
                failed = [b for b in made if isinstance(b, BaseException)]
                if failed:  # the others are closed below, not left to the leak guard
                    raise failed[0]
                listed = await rt.boxes.list(labels={"test": "gather"})
                assert sorted(b.id for b in listed) == sorted(b.id for b in boxes)
                results = await asyncio.gather(*(boxes[n % BOXES].run(_script(n))
                                                  for n in range(EXECS)))
                for n, r in enumerate(results):
                    _check(n, r)
            finally:
                await asyncio.gather(*(b.close() for b in boxes))

    asyncio.run(main())
    assert qemu_pids(home) == set()
    with microbox.Runtime() as rt:
        assert rt.boxes.list(all=True) == []


def test_sixteen_threads_share_one_runtime(home: Path) -> None:
    rt = microbox.Runtime()
    boxes: list[Box] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def worker(t: int) -> None:
        try:
            start.wait()
            box = rt.boxes.run("busybox", memory_mib=128)
            with lock:
                boxes.append(box)
            for n in range(t, EXECS, 16):  # the other threads' boxes too
                with lock:
                    target = boxes[n % len(boxes)]
                _check(n, target.run(_script(n)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for box in boxes:
        box.close()
    rt.close()
    assert errors == []
    assert len(boxes) == 16
    assert qemu_pids(home) == set()


def test_cancelled_exec_leaves_no_process_in_the_guest() -> None:
    async def main() -> str:
        async with microbox.AsyncRuntime() as rt, await rt.boxes.run("busybox") as box:
            # A child that ignores SIGTERM: only the group SIGKILL ends it.
            task = asyncio.create_task(box.run(
                ["sh", "-c", "trap '' TERM; sleep 1000 & echo $! > /tmp/child; wait"]))
            probe = await box.run(["sh", "-c", "until [ -s /tmp/child ]; do sleep 0.05; done"],
                                  timeout=30)
            assert probe.exit_code == 0
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            else:
                raise AssertionError("the run finished instead of being cancelled")
            # Gone means gone: kill -0 fails once the group was SIGKILLed and reaped.
            gone = await box.run(["sh", "-c", "child=$(cat /tmp/child); "
                                  "while kill -0 $child 2>/dev/null; do sleep 0.05; done; "
                                  "ps | grep -c '[s]leep 1000'"], timeout=30)
            return gone.stdout.decode().strip()

    assert asyncio.run(main()) == "0"


def test_cancelled_run_tears_down_the_box_it_was_booting(home: Path) -> None:
    async def main() -> None:
        async with microbox.AsyncRuntime() as rt:
            task = asyncio.create_task(rt.boxes.run("busybox", labels={"test": "cancelled"}))
            deadline = asyncio.get_running_loop().time() + 60
            while not await rt.boxes.list(all=True, labels={"test": "cancelled"}):
                assert asyncio.get_running_loop().time() < deadline, "the boot never began"
                await asyncio.sleep(0.02)  # polling for the row: the boot is under way
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    asyncio.run(main())  # closing the runtime waits for the orphaned boot and its teardown
    with microbox.Runtime() as rt:
        assert rt.boxes.list(all=True, labels={"test": None}) == []
    assert qemu_pids(home) == set()
