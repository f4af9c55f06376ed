"""The asyncio face's handles: the thread pool every blocking call runs on,
and the async twins of Execution, Connection and Box (sdk/aio.py has the
Runtime's collections and AsyncRuntime, and says how the face works)."""

from __future__ import annotations

import asyncio
import builtins
import functools
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Generic, TypeVar

from microbox.agent.ops import ExitStatus
from microbox.connection import Connection
from microbox.core.snapshots import Snapshot
from microbox.cp.report import CopyReport
from microbox.execution import Execution, Result
from microbox.images.pack import PackInfo
from microbox.images.progress import QUIET, Progress
from microbox.portmap import PortMap
from microbox.sdk.box import Box
from microbox.sdk.records import BoxInfo
from microbox.sdk.stats import BoxStats
from microbox.spec import BoxSpec
from microbox.store.images import Image
from microbox.workspace import DEFAULT_DEST, WorkspaceFile, WorkspacePush

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
        """`it` as an async iterator, each `next()` on the pool. A consumer that
        goes away before the end (cancelled, or the iterator closed: a client
        that disconnected) leaves no work behind: `on_cancel` ends the source
        (kills the process, stops a log follow), and `it` is closed on the pool
        once the `next()` in flight returns."""
        pull = _Pull(it)
        finished = False
        try:
            while True:
                item = await self.call(pull.next)
                if item is _END:
                    finished = True
                    return
                yield item  # type: ignore[misc]  # anything but _END is a T
        finally:
            if not finished:
                on_cancel()
                self._executor.submit(pull.close)

    def shutdown(self) -> None:
        """Drop queued calls; wait for running ones (and the teardown of their orphans)."""
        self._executor.shutdown(wait=True, cancel_futures=True)


class _Pull(Generic[T]):
    """One sync iterator, advanced and closed under one lock (never both at once)."""

    def __init__(self, it: Iterator[T]) -> None:
        self._it = it
        self._lock = threading.Lock()

    def next(self) -> T | object:
        with self._lock:
            return next(self._it, _END)

    def close(self) -> None:
        with self._lock:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()


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

    async def signal(self, sig: int = signal.SIGTERM) -> None:
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

    @property
    def main(self) -> builtins.list[str]:
        return self._box.main

    @property
    def ready_after(self) -> float:
        return self._box.ready_after

    def command(self, args: Sequence[str] = (), entrypoint: str | None = None
                ) -> builtins.list[str]:
        return self._box.command(args, entrypoint)

    async def info(self) -> BoxInfo:
        return await self._pool.call(self._box.info)

    async def net_info(self) -> dict[str, Any]:
        return await self._pool.call(self._box.net_info)

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
                  reset_policy: bool = False, net: str | None = None,
                  allow_hosts: Sequence[str] | None = None,
                  allow_cidrs: Sequence[str] | None = None, deny_all: bool | None = None,
                  allow_private: bool | None = None,
                  add_hosts: Sequence[str] | None = None) -> AsyncBox:
        return await self._do(self._box.set, cpus=cpus, memory_mib=memory_mib,
                              reset_policy=reset_policy, net=net, allow_hosts=allow_hosts,
                              allow_cidrs=allow_cidrs, deny_all=deny_all,
                              allow_private=allow_private, add_hosts=add_hosts)

    async def net_log(self) -> bytes:
        return await self._pool.call(self._box.net_log)

    async def stats(self, interval: float = 0.5) -> BoxStats:
        return await self._pool.call(self._box.stats, interval)

    async def delete(self, force: bool = False) -> None:
        await self._pool.call(self._box.delete, force)

    async def exec(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
                   cwd: str | None = None, user: str | None = None, stdin: bool = False,
                   tty: bool = False, rows: int = 24, cols: int = 80,
                   timeout: float | None = None, detach: bool = False,
                   main: bool = False) -> AsyncExecution:
        ex = await self._pool.call(self._box.exec, argv, env=env, cwd=cwd, user=user,
                                   stdin=stdin, tty=tty, rows=rows, cols=cols, timeout=timeout,
                                   detach=detach, main=main, on_orphan=Execution.kill)
        return AsyncExecution(ex, self._pool)

    async def shell(self, *, user: str | None = None, tty: bool = True, rows: int = 24,
                    cols: int = 80, env: dict[str, str] | None = None) -> AsyncExecution:
        """A login shell (Box.shell)."""
        ex = await self._pool.call(self._box.shell, user=user, tty=tty, rows=rows, cols=cols,
                                   env=env, on_orphan=Execution.kill)
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
                  env: dict[str, str] | None = None, cwd: str | None = None,
                  user: str | None = None, timeout: float | None = None,
                  limit: int | None = None) -> Result:
        """Run to completion; cancelling it kills the process group in the guest."""
        ex = await self.exec(argv, env=env, cwd=cwd, user=user, stdin=input is not None,
                             timeout=timeout)
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

    async def export(self, out: IO[bytes]) -> CopyReport:
        """Box.export on the pool: `out` is written on a worker thread."""
        return await self._pool.call(self._box.export, out)

    async def ping(self) -> None:
        await self._pool.call(self._box.ping)

    async def is_dir(self, path: str) -> bool:
        return await self._pool.call(self._box.is_dir, path)

    async def workspace_push(self, path: str | Path = ".", dest: str = DEFAULT_DEST,
                             include_untracked: bool = False) -> WorkspacePush:
        return await self._pool.call(self._box.workspace_push, path, dest, include_untracked)

    async def workspace_export(self, dest: str = DEFAULT_DEST) -> bytes:
        return await self._pool.call(self._box.workspace_export, dest)

    @staticmethod
    def workspace_files(path: str | Path = ".", include_untracked: bool = False
                        ) -> builtins.list[WorkspaceFile]:
        return Box.workspace_files(path, include_untracked)

    async def logs(self, tail: int | None = None) -> bytes:
        return await self._pool.call(self._box.logs, tail)

    def follow_logs(self, tail: int | None = None, *, follow: bool = True,
                    stop: threading.Event | None = None) -> AsyncIterator[bytes]:
        """Box.follow_logs; a consumer that goes away ends the follow (`stop`)."""
        stop = stop or threading.Event()
        return self._pool.iterate(self._box.follow_logs(tail, follow=follow, stop=stop),
                                  stop.set)

    async def snapshot(self, name: str | None = None) -> Snapshot:
        return await self._pool.call(self._box.snapshot, name)

    async def commit(self, name: str, *, changes: builtins.list[str] | None = None,
                     progress: Progress = QUIET) -> Image:
        return await self._pool.call(self._box.commit, name, changes=changes,
                                     progress=progress)

    async def pack(self, path: str | Path, *, stop: bool = False,
                   progress: Progress = QUIET) -> PackInfo:
        return await self._pool.call(self._box.pack, path, stop=stop, progress=progress)

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
