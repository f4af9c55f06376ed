"""The asyncio face of the SDK. It wraps the thread-safe sync implementation,
so both share every line of behaviour (docs/architecture.md says why).

    async with AsyncRuntime() as rt:
        async with await rt.run("busybox") as box:
            result = await box.run(["uname", "-a"])

Blocking calls run on the runtime's own thread pool (`max_threads`, default
256), not on the event loop's default executor, whose handful of threads would
let a few long `box.run` calls stall every other coroutine. Cancelling an await
never leaves work behind: a cancelled exec or run kills the guest process group,
and a box whose boot completes after its `run` was cancelled is torn down.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from microbox.agent.ops import ExitStatus
from microbox.connection import Connection
from microbox.core.doctor import Check
from microbox.cp.report import CopyReport
from microbox.portmap import PortMap
from microbox.sdk import (
    VMM,
    Box,
    Execution,
    GcReport,
    Image,
    PackInfo,
    Pool,
    Result,
    Runtime,
    Snapshot,
)
from microbox.spec import BoxSpec
from microbox.workspace import DEFAULT_DEST, WorkspacePush

T = TypeVar("T")
MAX_THREADS = 256
_END = object()


class _Pool:
    """The thread pool every blocking call of one AsyncRuntime runs on."""

    def __init__(self, max_threads: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_threads,
                                            thread_name_prefix="microbox-aio")

    async def call(self, fn: Callable[..., T], *args: Any,
                   on_orphan: Callable[[T], object] | None = None, **kw: Any) -> T:
        """`fn(*args, **kw)` on the pool. If the await is cancelled while `fn`
        runs, `on_orphan` gets its result when it finishes (to undo it)."""
        fut: Future[T] = self._executor.submit(functools.partial(fn, *args, **kw))
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            if on_orphan is not None:
                fut.add_done_callback(functools.partial(_orphaned, on_orphan))
            raise

    async def iterate(self, it: Iterator[T], on_cancel: Callable[[], object]) -> AsyncIterator[T]:
        while True:
            try:
                item = await self.call(next, it, _END)
            except asyncio.CancelledError:
                on_cancel()
                raise
            if item is _END:
                return
            yield item

    def shutdown(self) -> None:
        """Drop queued calls; wait for running ones (and the teardown of their orphans)."""
        self._executor.shutdown(wait=True, cancel_futures=True)


def _orphaned(undo: Callable[[T], object], fut: Future[T]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        undo(fut.result())


class AsyncExecution:
    def __init__(self, ex: Execution, pool: _Pool) -> None:
        self._ex = ex
        self._pool = pool
        self.pid = ex.pid

    @property
    def status(self) -> ExitStatus | None:
        return self._ex.status

    async def write(self, data: bytes) -> None:
        await self._pool.call(self._ex.write, data)

    async def close_stdin(self) -> None:
        await self._pool.call(self._ex.close_stdin)

    async def signal(self, sig: int = 15) -> None:
        await self._pool.call(self._ex.signal, sig)

    async def kill(self) -> None:
        await self._pool.call(self._ex.kill)

    async def resize(self, rows: int, cols: int) -> None:
        await self._pool.call(self._ex.resize, rows, cols)

    def events(self) -> AsyncIterator[tuple[str, bytes]]:
        """Output as it comes; cancelling the consumer kills the process."""
        return self._pool.iterate(self._ex.events(), self._ex.kill)

    async def wait(self) -> ExitStatus:
        """The exit status; a cancelled wait kills the process."""
        try:
            return await self._pool.call(self._ex.wait)
        except asyncio.CancelledError:
            self._ex.kill()
            raise

    async def collect(self, input: bytes | None = None, limit: int | None = None) -> Result:
        try:
            return await self._pool.call(self._ex.collect, input, limit)
        except asyncio.CancelledError:
            self._ex.kill()
            raise


class AsyncConnection:
    """Connection (a guest TCP port over the agent channel), for asyncio."""

    def __init__(self, conn: Connection, pool: _Pool) -> None:
        self._conn = conn
        self._pool = pool

    async def send(self, data: bytes) -> None:
        await self._pool.call(self._conn.send, data)

    async def close_write(self) -> None:
        await self._pool.call(self._conn.close_write)

    def receive(self) -> AsyncIterator[bytes]:
        return self._pool.iterate(self._conn.receive(), self._conn.close)

    async def close(self) -> None:
        await self._pool.call(self._conn.close)


def _delete_all(boxes: builtins.list[Box]) -> None:
    for b in boxes:
        b.delete(force=True)


def _delete_one(box: Box) -> None:
    box.delete(force=True)


class AsyncBox:
    def __init__(self, box: Box, pool: _Pool) -> None:
        self._box = box
        self._pool = pool

    @property
    def sync(self) -> Box:
        """The underlying sync handle."""
        return self._box

    @property
    def id(self) -> str:
        return self._box.id

    @property
    def name(self) -> str:
        return self._box.name

    @property
    def status(self) -> str:
        return self._box.status

    @property
    def spec(self) -> BoxSpec:
        return self._box.spec

    async def _do(self, fn: Callable[..., object], *args: Any, **kw: Any) -> AsyncBox:
        await self._pool.call(fn, *args, **kw)
        return self

    async def reload(self) -> AsyncBox:
        return await self._do(self._box.reload)

    async def info(self) -> dict[str, Any]:
        return await self._pool.call(self._box.info)

    async def start(self) -> AsyncBox:
        return await self._do(self._box.start)

    async def stop(self, timeout: float = 10.0) -> AsyncBox:
        return await self._do(self._box.stop, timeout)

    async def restart(self, timeout: float = 10.0) -> AsyncBox:
        return await self._do(self._box.restart, timeout)

    async def pause(self) -> AsyncBox:
        return await self._do(self._box.pause)

    async def resume(self) -> AsyncBox:
        return await self._do(self._box.resume)

    async def set(self, *, cpus: int | None = None, memory_mib: int | None = None,
                  **net: Any) -> AsyncBox:
        """As Box.set: resources, and the network (net, allow_hosts, ..., reset_policy)."""
        return await self._do(self._box.set, cpus=cpus, memory_mib=memory_mib, **net)

    async def net_log(self) -> bytes:
        return await self._pool.call(self._box.net_log)

    async def delete(self, force: bool = False) -> None:
        await self._pool.call(self._box.delete, force)

    async def exec(self, argv: Sequence[str], **kw: Any) -> AsyncExecution:
        ex = await self._pool.call(self._box.exec, argv, on_orphan=Execution.kill, **kw)
        return AsyncExecution(ex, self._pool)

    async def shell(self, **kw: Any) -> AsyncExecution:
        """A login shell (Box.shell)."""
        ex = await self._pool.call(self._box.shell, on_orphan=Execution.kill, **kw)
        return AsyncExecution(ex, self._pool)

    @property
    def ports(self) -> tuple[PortMap, ...]:
        return self._box.ports

    async def connect(self, port: int, *, host: str = "127.0.0.1") -> AsyncConnection:
        """A TCP connection to `port` inside the box (Box.connect)."""
        conn = await self._pool.call(self._box.connect, port, host=host,
                                     on_orphan=Connection.close)
        return AsyncConnection(conn, self._pool)

    async def run(self, argv: Sequence[str], *, input: bytes | None = None,
                  limit: int | None = None, **kw: Any) -> Result:
        """Run to completion; cancelling it kills the process group in the guest."""
        ex = await self.exec(argv, stdin=input is not None, **kw)
        return await ex.collect(input, limit)

    async def put(self, local: str | Path | IO[bytes], remote: str,
                  mode: int | None = None) -> None:
        await self._pool.call(self._box.put, local, remote, mode)

    async def get(self, remote: str, local: str | Path | IO[bytes],
                  max_bytes: int | None = None) -> int:
        return await self._pool.call(self._box.get, remote, local, max_bytes)

    async def copy_in(self, src: str | Path, dest: str) -> CopyReport:
        """Box.copy_in on the pool (a cancelled copy still runs to its end)."""
        return await self._pool.call(self._box.copy_in, src, dest)

    async def copy_out(self, src: str, dest: str | Path) -> CopyReport:
        """Box.copy_out on the pool (a cancelled copy still runs to its end)."""
        return await self._pool.call(self._box.copy_out, src, dest)

    async def copy_in_tar(self, tar: IO[bytes] | Iterable[bytes], dest: str) -> CopyReport:
        """Box.copy_in_tar on the pool: `tar` is read on a worker thread."""
        return await self._pool.call(self._box.copy_in_tar, tar, dest)

    async def copy_out_tar(self, src: str, out: IO[bytes]) -> CopyReport:
        """Box.copy_out_tar on the pool: `out` is written on a worker thread."""
        return await self._pool.call(self._box.copy_out_tar, src, out)

    async def ping(self) -> None:
        await self._pool.call(self._box.ping)

    async def workspace_push(self, path: str | Path = ".", dest: str = DEFAULT_DEST,
                             include_untracked: bool = False) -> WorkspacePush:
        return await self._pool.call(self._box.workspace_push, path, dest, include_untracked)

    async def workspace_export(self, dest: str = DEFAULT_DEST) -> bytes:
        return await self._pool.call(self._box.workspace_export, dest)

    async def logs(self, tail: int | None = None) -> bytes:
        return await self._pool.call(self._box.logs, tail)

    def follow_logs(self, tail: int | None = None) -> AsyncIterator[bytes]:
        return self._pool.iterate(self._box.follow_logs(tail), lambda: None)

    async def snapshot(self, name: str | None = None) -> Snapshot:
        return await self._pool.call(self._box.snapshot, name)

    async def pack(self, path: str | Path, *, stop: bool = False) -> PackInfo:
        return await self._pool.call(self._box.pack, path, stop=stop)

    async def fork(self, n: int = 1, *, name_prefix: str | None = None, rm: bool = False,
                   detach: bool = True) -> builtins.list[AsyncBox]:
        """Clones of this box; a cancelled fork deletes the clones it made."""
        clones = await self._pool.call(self._box.fork, n, name_prefix=name_prefix, rm=rm,
                                       detach=detach, on_orphan=_delete_all)
        return [AsyncBox(c, self._pool) for c in clones]

    async def release(self) -> None:
        await self._pool.call(self._box.release)

    async def close(self) -> None:
        await self._pool.call(self._box.close)

    async def __aenter__(self) -> AsyncBox:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class AsyncRuntime:
    def __init__(self, runtime: Runtime | None = None, *, max_threads: int = MAX_THREADS) -> None:
        self._rt = runtime or Runtime()
        self._pool = _Pool(max_threads)

    @property
    def sync(self) -> Runtime:
        return self._rt

    def _box(self, box: Box) -> AsyncBox:
        return AsyncBox(box, self._pool)

    async def create(self, image: str | None = None, **kw: Any) -> AsyncBox:
        return self._box(await self._pool.call(self._rt.create, image, on_orphan=Box.close,
                                               **kw))

    async def run(self, image: str | None = None, **kw: Any) -> AsyncBox:
        """Create and start a box; a cancelled run tears down the box it was making."""
        return self._box(await self._pool.call(self._rt.run, image, on_orphan=Box.close, **kw))

    async def run_spec(self, spec: BoxSpec, **kw: Any) -> AsyncBox:
        return self._box(await self._pool.call(self._rt.run_spec, spec, on_orphan=Box.close,
                                               **kw))

    async def get(self, ref: str) -> AsyncBox:
        return self._box(await self._pool.call(self._rt.get, ref))

    async def list(self, *, all: bool = False, status: str | None = None,
                   labels: dict[str, str | None] | None = None) -> builtins.list[AsyncBox]:
        found = await self._pool.call(self._rt.list, all=all, status=status, labels=labels)
        return [self._box(b) for b in found]

    async def cleanup_candidates(self, include_running: bool = False
                                 ) -> builtins.list[AsyncBox]:
        found = await self._pool.call(self._rt.cleanup_candidates, include_running)
        return [self._box(b) for b in found]

    async def cleanup(self, boxes: Sequence[AsyncBox]) -> builtins.list[str]:
        return await self._pool.call(self._rt.cleanup, [b.sync for b in boxes])

    async def gc(self, dry_run: bool = False) -> GcReport:
        return await self._pool.call(self._rt.gc, dry_run)

    async def find_vmm(self, ref: str) -> VMM:
        return await self._pool.call(self._rt.find_vmm, ref)

    async def kill_vmm(self, target: VMM) -> None:
        await self._pool.call(self._rt.kill_vmm, target)

    async def doctor(self) -> builtins.list[Check]:
        return await self._pool.call(self._rt.doctor)

    async def images(self) -> builtins.list[Image]:
        return await self._pool.call(self._rt.images)

    async def build_image(self, name: str = "busybox", *, force: bool = False,
                          include: builtins.list[str] | None = None) -> Image:
        return await self._pool.call(self._rt.build_image, name, force=force, include=include)

    async def image(self, name: str) -> Image:
        return await self._pool.call(self._rt.image, name)

    async def pull(self, ref: str, *, insecure: bool = False) -> Image:
        return await self._pool.call(self._rt.pull, ref, insecure=insecure)

    async def import_image(self, source: str | Path, name: str) -> Image:
        return await self._pool.call(self._rt.import_image, source, name)

    async def remove_image(self, name: str, *, force: bool = False) -> Image:
        return await self._pool.call(self._rt.remove_image, name, force=force)

    async def prune_images(self, *, all: bool = False) -> builtins.list[str]:
        return await self._pool.call(self._rt.prune_images, all=all)

    async def restore(self, snapshot: str, *, name: str | None = None, rm: bool = False,
                      detach: bool = True) -> AsyncBox:
        """A new running box from a snapshot; a cancelled restore deletes it."""
        return self._box(await self._pool.call(self._rt.restore, snapshot, name=name, rm=rm,
                                               detach=detach, on_orphan=_delete_one))

    async def snapshots(self) -> builtins.list[Snapshot]:
        return await self._pool.call(self._rt.snapshots)

    async def remove_snapshot(self, ref: str, force: bool = False) -> None:
        await self._pool.call(self._rt.remove_snapshot, ref, force)

    async def warm(self, image: str = "busybox", **kw: Any) -> str:
        return await self._pool.call(self._rt.warm, image, **kw)

    async def add_pool(self, image: str = "busybox", **kw: Any) -> Pool:
        return await self._pool.call(self._rt.add_pool, image, **kw)

    async def pools(self) -> builtins.list[Pool]:
        return await self._pool.call(self._rt.pools)

    async def pool(self, ref: str) -> Pool:
        return await self._pool.call(self._rt.pool, ref)

    async def remove_pool(self, ref: str) -> Pool:
        return await self._pool.call(self._rt.remove_pool, ref)

    async def pack_image(self, name: str, path: str | Path) -> PackInfo:
        return await self._pool.call(self._rt.pack_image, name, path)

    async def inspect_pack(self, path: str | Path) -> PackInfo:
        return await self._pool.call(self._rt.inspect_pack, path)

    async def import_pack(self, path: str | Path, **kw: Any) -> BoxSpec:
        return await self._pool.call(self._rt.import_pack, path, **kw)

    async def tag_image(self, source: str, target: str) -> Image:
        return await self._pool.call(self._rt.tag_image, source, target)

    async def close(self) -> None:
        """Wait for calls still running (a cancelled boot's teardown among them),
        then close the runtime."""
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)
        self._rt.close()

    async def __aenter__(self) -> AsyncRuntime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
