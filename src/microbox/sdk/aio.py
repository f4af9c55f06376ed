"""The asyncio face of the SDK. It wraps the thread-safe sync implementation,
so both share every line of behaviour (docs/architecture.md says why).

    async with AsyncRuntime() as rt:
        async with await rt.boxes.run("busybox") as box:
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
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from microbox.core.doctor import Check
from microbox.core.log import Log
from microbox.core.maintenance import GcReport
from microbox.core.orphans import VMM
from microbox.core.pool import Pool
from microbox.core.snapshots import Snapshot
from microbox.images.pack import PackInfo
from microbox.images.progress import QUIET, Progress
from microbox.images.push import Pushed
from microbox.mounts import Mount
from microbox.net import plan
from microbox.portmap import PortMap
from microbox.sdk.aio_handles import (
    MAX_THREADS,
    AsyncBox,
    AsyncConnection,
    AsyncExecution,
    _delete_one,
    _Pool,
)
from microbox.sdk.box import Box
from microbox.sdk.boxes import Boxes
from microbox.sdk.host import Host
from microbox.sdk.images import Images
from microbox.sdk.pools import Pools
from microbox.sdk.runtime import Runtime
from microbox.sdk.snapshots import Snapshots
from microbox.sdk.stats import BoxStats
from microbox.sdk.volumes import Volumes
from microbox.spec import DEFAULT_IMAGE, DEFAULT_MEMORY_MIB, BoxSpec
from microbox.store.db import Database
from microbox.store.events import Event
from microbox.store.images import Image
from microbox.volumes import Volume

__all__ = ["AsyncBox", "AsyncBoxes", "AsyncConnection", "AsyncExecution", "AsyncHost",
           "AsyncImages", "AsyncPools", "AsyncRuntime", "AsyncSnapshots"]


class AsyncBoxes:
    """rt.boxes, for asyncio."""

    def __init__(self, boxes: Boxes, pool: _Pool) -> None:
        self._boxes = boxes
        self._pool = pool

    def _box(self, box: Box) -> AsyncBox:
        return AsyncBox(box, self._pool)

    def watch_stats(self, refs: Sequence[str] = (), *, interval: float = 1.0,
                    stream: bool = True, stop: threading.Event | None = None
                    ) -> AsyncIterator[builtins.list[BoxStats]]:
        """Boxes.watch_stats; a consumer that goes away ends it (`stop`)."""
        stop = stop or threading.Event()
        return self._pool.iterate(self._boxes.watch_stats(refs, interval=interval,
                                                          stream=stream, stop=stop), stop.set)

    async def create(self, image: str | None = None, *, name: str | None = None,
                     start: bool = False, spec: BoxSpec | None = None,
                     from_pack: str | Path | None = None, progress: Progress = QUIET,
                     cpus: int | None = None, memory_mib: int | None = None,
                     env: dict[str, str] | None = None, workdir: str | None = None,
                     user: str | None = None, accel: str | None = None,
                     kernel: str | None = None, labels: dict[str, str] | None = None,
                     cold: bool = False, ports: Sequence[str | PortMap] | None = None,
                     net: str | None = None, allow_hosts: Sequence[str] | None = None,
                     allow_cidrs: Sequence[str] | None = None, deny_all: bool = False,
                     allow_private: bool = False, add_hosts: Sequence[str] | None = None,
                     mounts: Sequence[str | Mount] | None = None,
                     ca_certs: Sequence[str | Path] | None = None,
                     trust_host_ca: bool | None = None) -> AsyncBox:
        """Boxes.create; a cancelled create tears down the box it was making."""
        return self._box(await self._pool.call(
            self._boxes.create, image, name=name, start=start, spec=spec, from_pack=from_pack,
            progress=progress, cpus=cpus, memory_mib=memory_mib, env=env, workdir=workdir,
            user=user, accel=accel, kernel=kernel, labels=labels, cold=cold, ports=ports,
            net=net, allow_hosts=allow_hosts, allow_cidrs=allow_cidrs, deny_all=deny_all,
            allow_private=allow_private, add_hosts=add_hosts, mounts=mounts,
            ca_certs=ca_certs, trust_host_ca=trust_host_ca, on_orphan=Box.close))

    async def run(self, image: str | None = None, command: Sequence[str] = (), *,
                  entrypoint: str | None = None, detach: bool = False, rm: bool = True,
                  name: str | None = None, spec: BoxSpec | None = None,
                  from_pack: str | Path | None = None, progress: Progress = QUIET,
                  cpus: int | None = None, memory_mib: int | None = None,
                  env: dict[str, str] | None = None, workdir: str | None = None,
                  user: str | None = None, accel: str | None = None, kernel: str | None = None,
                  labels: dict[str, str] | None = None, cold: bool = False,
                  ports: Sequence[str | PortMap] | None = None, net: str | None = None,
                  allow_hosts: Sequence[str] | None = None,
                  allow_cidrs: Sequence[str] | None = None, deny_all: bool = False,
                  allow_private: bool = False, add_hosts: Sequence[str] | None = None,
                  mounts: Sequence[str | Mount] | None = None,
                  ca_certs: Sequence[str | Path] | None = None,
                  trust_host_ca: bool | None = None) -> AsyncBox:
        """Boxes.run; a cancelled run tears down the box it was making."""
        return self._box(await self._pool.call(
            self._boxes.run, image, command, entrypoint=entrypoint, detach=detach, rm=rm,
            name=name, spec=spec, from_pack=from_pack, progress=progress, cpus=cpus,
            memory_mib=memory_mib, env=env, workdir=workdir, user=user, accel=accel,
            kernel=kernel, labels=labels, cold=cold, ports=ports, net=net,
            allow_hosts=allow_hosts, allow_cidrs=allow_cidrs, deny_all=deny_all,
            allow_private=allow_private, add_hosts=add_hosts, mounts=mounts,
            ca_certs=ca_certs, trust_host_ca=trust_host_ca, on_orphan=Box.close))

    async def restore(self, snapshot: str, *, name: str | None = None, rm: bool = False,
                      detach: bool = True) -> AsyncBox:
        """A new running box from a snapshot; a cancelled restore deletes it."""
        return self._box(await self._pool.call(self._boxes.restore, snapshot, name=name, rm=rm,
                                               detach=detach, on_orphan=_delete_one))

    async def get(self, ref: str) -> AsyncBox:
        return self._box(await self._pool.call(self._boxes.get, ref))

    async def shared(self, ref: str) -> AsyncBox:
        return self._box(await self._pool.call(self._boxes.shared, ref))

    async def list(self, *, all: bool = False, status: str | None = None,
                   labels: dict[str, str | None] | None = None) -> builtins.list[AsyncBox]:
        found = await self._pool.call(self._boxes.list, all=all, status=status, labels=labels)
        return [self._box(b) for b in found]

    async def cleanup_candidates(self, include_running: bool = False
                                 ) -> builtins.list[AsyncBox]:
        found = await self._pool.call(self._boxes.cleanup_candidates, include_running)
        return [self._box(b) for b in found]

    async def cleanup(self, boxes: Sequence[AsyncBox]) -> builtins.list[str]:
        return await self._pool.call(self._boxes.cleanup, [b.sync for b in boxes])


class AsyncImages:
    """rt.images, for asyncio."""

    def __init__(self, images: Images, pool: _Pool) -> None:
        self._images = images
        self._pool = pool

    async def list(self) -> builtins.list[Image]:
        return await self._pool.call(self._images.list)

    async def get(self, name: str) -> Image:
        return await self._pool.call(self._images.get, name)

    @staticmethod
    def builtin() -> builtins.list[str]:
        return Images.builtin()

    async def build(self, path: str | Path = ".", *, tag: str | None = None,
                    dockerfile: str | Path | None = None,
                    build_args: dict[str, str] | None = None, target: str | None = None,
                    no_cache: bool = False, net: str = plan.DEFAULT_MODE,
                    progress: Progress = QUIET) -> Image:
        return await self._pool.call(self._images.build, path, tag=tag, dockerfile=dockerfile,
                                     build_args=build_args, target=target,
                                     no_cache=no_cache, net=net, progress=progress)

    async def build_builtin(self, name: str = DEFAULT_IMAGE, *, force: bool = False,
                            include: builtins.list[str] | None = None,
                            progress: Progress = QUIET) -> Image:
        return await self._pool.call(self._images.build_builtin, name, force=force,
                                     include=include, progress=progress)

    async def pull(self, ref: str, *, insecure: bool = False,
                   progress: Progress = QUIET) -> Image:
        return await self._pool.call(self._images.pull, ref, insecure=insecure,
                                     progress=progress)

    async def import_rootfs(self, source: str | Path | IO[bytes], name: str, *,
                            progress: Progress = QUIET) -> Image:
        return await self._pool.call(self._images.import_rootfs, source, name,
                                     progress=progress)

    async def remove(self, name: str, *, force: bool = False) -> Image:
        return await self._pool.call(self._images.remove, name, force=force)

    async def prune(self, *, all: bool = False) -> builtins.list[str]:
        return await self._pool.call(self._images.prune, all=all)

    async def users(self, name: str) -> builtins.list[str]:
        return await self._pool.call(self._images.users, name)

    async def tag(self, source: str, target: str) -> Image:
        return await self._pool.call(self._images.tag, source, target)

    async def push(self, name: str, ref: str, *, insecure: bool = False,
                   progress: Progress = QUIET) -> Pushed:
        """Images.push on the pool (a cancelled push still runs to its end, and its
        throwaway box is deleted as always)."""
        return await self._pool.call(self._images.push, name, ref, insecure=insecure,
                                     progress=progress)

    async def login(self, registry: str, username: str, password: str, *,
                    insecure: bool = False) -> None:
        await self._pool.call(self._images.login, registry, username, password,
                              insecure=insecure)

    async def warm(self, image: str = DEFAULT_IMAGE, *, cpus: int = 1,
                   memory_mib: int = DEFAULT_MEMORY_MIB, accel: str = "auto",
                   net: str = plan.DEFAULT_MODE) -> str:
        return await self._pool.call(self._images.warm, image, cpus=cpus,
                                     memory_mib=memory_mib, accel=accel, net=net)

    async def resolve(self, spec: BoxSpec, progress: Progress = QUIET) -> BoxSpec:
        return await self._pool.call(self._images.resolve, spec, progress)

    async def pack(self, name: str, path: str | Path, *,
                   progress: Progress = QUIET) -> PackInfo:
        return await self._pool.call(self._images.pack, name, path, progress=progress)

    async def inspect_pack(self, path: str | Path, *, progress: Progress = QUIET) -> PackInfo:
        return await self._pool.call(self._images.inspect_pack, path, progress=progress)

    async def import_pack(self, path: str | Path, *, box_name: str | None = None,
                          progress: Progress = QUIET,
                          overrides: dict[str, Any] | None = None) -> BoxSpec:
        return await self._pool.call(self._images.import_pack, path, box_name=box_name,
                                     progress=progress, overrides=overrides)


class AsyncSnapshots:
    """rt.snapshots, for asyncio."""

    def __init__(self, snapshots: Snapshots, pool: _Pool) -> None:
        self._snapshots = snapshots
        self._pool = pool

    async def list(self) -> builtins.list[Snapshot]:
        return await self._pool.call(self._snapshots.list)

    async def get(self, ref: str) -> Snapshot:
        return await self._pool.call(self._snapshots.get, ref)

    async def remove(self, ref: str, force: bool = False) -> None:
        await self._pool.call(self._snapshots.remove, ref, force)


class AsyncVolumes:
    """rt.volumes, for asyncio."""

    def __init__(self, volumes: Volumes, pool: _Pool) -> None:
        self._volumes = volumes
        self._pool = pool

    async def create(self, name: str, *, size: int | str | None = None) -> Volume:
        return await self._pool.call(self._volumes.create, name, size=size)

    async def list(self) -> builtins.list[Volume]:
        return await self._pool.call(self._volumes.list)

    async def get(self, name: str) -> Volume:
        return await self._pool.call(self._volumes.get, name)

    async def users(self, name: str) -> builtins.list[str]:
        return await self._pool.call(self._volumes.users, name)

    async def remove(self, name: str) -> Volume:
        return await self._pool.call(self._volumes.remove, name)


class AsyncPools:
    """rt.pools, for asyncio."""

    def __init__(self, pools: Pools, pool: _Pool) -> None:
        self._pools = pools
        self._pool = pool

    async def add(self, image: str = DEFAULT_IMAGE, *, size: int = 1, cpus: int = 1,
                  memory_mib: int = DEFAULT_MEMORY_MIB, accel: str = "auto",
                  kernel: str | None = None, net: str = plan.DEFAULT_MODE) -> Pool:
        return await self._pool.call(self._pools.add, image, size=size, cpus=cpus,
                                     memory_mib=memory_mib, accel=accel, kernel=kernel, net=net)

    async def list(self) -> builtins.list[Pool]:
        return await self._pool.call(self._pools.list)

    async def get(self, ref: str) -> Pool:
        return await self._pool.call(self._pools.get, ref)

    async def remove(self, ref: str) -> Pool:
        return await self._pool.call(self._pools.remove, ref)


class AsyncHost:
    """rt.host, for asyncio."""

    def __init__(self, host: Host, pool: _Pool) -> None:
        self._host = host
        self._pool = pool

    async def doctor(self) -> builtins.list[Check]:
        return await self._pool.call(self._host.doctor)

    async def gc(self, dry_run: bool = False) -> GcReport:
        return await self._pool.call(self._host.gc, dry_run)

    async def find_vmm(self, ref: str) -> VMM:
        return await self._pool.call(self._host.find_vmm, ref)

    async def kill_vmm(self, target: VMM) -> None:
        await self._pool.call(self._host.kill_vmm, target)

    async def build_kernel(self, *, force: bool = False, progress: Progress = QUIET) -> Path:
        return await self._pool.call(self._host.build_kernel, force=force, progress=progress)

    async def build_agent(self, *, force: bool = False) -> Path:
        return await self._pool.call(self._host.build_agent, force=force)


class AsyncRuntime:
    """The Runtime, for asyncio: the same collections, each call on this
    runtime's own thread pool."""

    def __init__(self, runtime: Runtime | None = None, *, log: Log | None = None,
                 max_threads: int = MAX_THREADS) -> None:
        self._rt = runtime or Runtime(log=log)
        self._pool = _Pool(max_threads)
        self.boxes = AsyncBoxes(self._rt.boxes, self._pool)
        self.images = AsyncImages(self._rt.images, self._pool)
        self.snapshots = AsyncSnapshots(self._rt.snapshots, self._pool)
        self.pools = AsyncPools(self._rt.pools, self._pool)
        self.volumes = AsyncVolumes(self._rt.volumes, self._pool)
        self.host = AsyncHost(self._rt.host, self._pool)

    @property
    def sync(self) -> Runtime:
        return self._rt

    @property
    def log(self) -> Log:
        return self._rt.log

    @property
    def db(self) -> Database:
        return self._rt.db

    def events(self, *, since: float | None = None, until: float | None = None,
               filters: Mapping[str, str | Sequence[str]] | None = None,
               follow: bool = False, stop: threading.Event | None = None
               ) -> AsyncIterator[Event]:
        """Runtime.events; a consumer that goes away ends the follow (`stop`)."""
        stop = stop or threading.Event()
        return self._pool.iterate(self._rt.events(since=since, until=until, filters=filters,
                                                  follow=follow, stop=stop), stop.set)

    async def close(self) -> None:
        """Wait for calls still running (a cancelled boot's teardown among them),
        then close the runtime."""
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)
        self._rt.close()

    async def __aenter__(self) -> AsyncRuntime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
