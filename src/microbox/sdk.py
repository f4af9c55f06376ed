"""The Python SDK: Runtime and Box. The CLI, the HTTP API and the MCP server are
thin layers over it; none of them orchestrates anything of its own.

    import microbox
    with microbox.Runtime() as rt, rt.run("busybox") as box:
        result = box.run(["echo", "hello"])
        print(result.exit_code, result.stdout)

Leaving the `with` block always tears the VM down, and a box started by this
process dies with it even if the process is SIGKILLed (PR_SET_PDEATHSIG).

Everything here is safe to call from many threads at once: the database gives
each thread its own connection, and a Box's agent session multiplexes any
number of concurrent executions. `microbox.aio` is the asyncio face.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from microbox import lazy, paths, portmap
from microbox.box import Box
from microbox.core import reconcile
from microbox.core.log import Log, quiet
from microbox.errors import BuildError, Refused, UsageError
from microbox.execution import Execution, Result
from microbox.images.progress import QUIET, Progress
from microbox.net import plan
from microbox.portmap import PortMap
from microbox.spec import DEFAULT_MEMORY_MIB, BoxSpec, validate_name
from microbox.store import boxes as boxes_store
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database
from microbox.store.status import LISTED, LIVE, STATUSES, Status

# What only some calls need (booting VMs, images, packs, snapshots, housekeeping,
# builds) is imported by those calls, so a program that only runs commands in
# existing boxes (`microbox exec`) does not load it. The names below that come
# from those modules are loaded on first use, as `microbox`'s own are.
if TYPE_CHECKING:
    from microbox.core.doctor import Check
    from microbox.core.maintenance import GcReport
    from microbox.core.orphans import VMM
    from microbox.core.pool import Pool
    from microbox.core.snapshots import Snapshot
    from microbox.images.pack import PackInfo
    from microbox.store.images import Image
    from microbox.workspace import WorkspaceFile, WorkspacePush, workspace_files

_LAZY = {
    "GcReport": "microbox.core.maintenance", "VMM": "microbox.core.orphans",
    "Pool": "microbox.core.pool",
    "Snapshot": "microbox.core.snapshots", "PackInfo": "microbox.images.pack",
    "Image": "microbox.store.images", "WorkspaceFile": "microbox.workspace",
    "WorkspacePush": "microbox.workspace", "workspace_files": "microbox.workspace",
}

__all__ = ["LIVE", "STATUSES", "VMM", "Box", "Execution", "GcReport", "Image", "PackInfo",
           "Pool", "Result", "Runtime", "Snapshot", "Status", "WorkspaceFile", "WorkspacePush",
           "workspace_files"]


__getattr__ = lazy.attributes(__name__, _LAZY)


def _one_source(image: str | None, pack: str | Path) -> None:
    if image is not None:
        raise UsageError(f"give an image or a pack ({pack}), not both")



class Runtime:
    """Entry point of the SDK: makes and finds boxes under MICROBOX_HOME."""

    def __init__(self, *, log: Log | None = None) -> None:
        self.log: Log = log or quiet
        self._db: Database | None = None
        self._db_lock = threading.Lock()
        self._shared: dict[str, Box] = {}
        self._shared_lock = threading.Lock()

    @property
    def db(self) -> Database:
        with self._db_lock:
            if self._db is None:
                self._db = Database(paths.database())
            return self._db

    # -- making boxes --------------------------------------------------------

    def create(self, image: str | None = None, *, name: str | None = None,
               start: bool = False, from_pack: str | Path | None = None,
               progress: Progress = QUIET, **spec: Any) -> Box:
        """Create a box (stopped unless start) of `image` (default busybox), or of the
        pack `from_pack` with its spec; spec keywords as in BoxSpec (with a pack, env
        and labels add to the pack's, the others replace its values)."""
        if "ports" in spec:
            spec["ports"] = portmap.parse_all(spec["ports"])
        if from_pack is not None:
            _one_source(image, from_pack)
            made = self.import_pack(from_pack, box_name=name, progress=progress, **spec)
        else:
            made = BoxSpec(image=image or "busybox", **spec)
        return self.create_spec(made, name=name, start=start, progress=progress)

    def create_spec(self, spec: BoxSpec, *, name: str | None = None,
                    start: bool = False, progress: Progress = QUIET) -> Box:
        from microbox.core import lifecycle
        from microbox.images import store

        spec = self._with_image(spec, progress)
        with store.using():  # `image rm` cannot take the file between resolve and disk
            record, lock = lifecycle.create(self.db, spec, name=name, start_next=start)
        if not start:
            lock.close()
            return Box(self, record)
        started = lifecycle.start(self.db, record, lock, attached=False, log=self.log)
        return Box(self, started.record, started=started)

    def run(self, image: str | None = None, *, name: str | None = None,
            cpus: int | None = None, memory_mib: int | None = None,
            env: dict[str, str] | None = None, workdir: str | None = None,
            user: str | None = None, accel: str | None = None, kernel: str | None = None,
            labels: dict[str, str] | None = None, rm: bool = True, detach: bool = False,
            cold: bool = False, from_pack: str | Path | None = None,
            ports: Sequence[str | PortMap] | None = None, net: str | None = None,
            allow_hosts: Sequence[str] | None = None, allow_cidrs: Sequence[str] | None = None,
            deny_all: bool = False, allow_private: bool = False,
            add_hosts: Sequence[str] | None = None) -> Box:
        """Create and start a box of `image` (default busybox) or of the pack
        `from_pack`; use it as a context manager to tear it down. It is restored
        from its image's warm-start template unless `cold`. `ports` publishes host
        ports into it ("8080:80", "0.0.0.0:8080:80"; 127.0.0.1 unless named).
        `net` is "user" (the default: egress through a filtering proxy, with the
        policy of allow_hosts, allow_cidrs, deny_all, allow_private; add_hosts
        "NAME:ADDRESS" for the proxy's resolver), "tap" (root: a routed TAP in
        the box's own namespace, the same policy enforced by nftables and the
        box's resolver) or "none" (docs/net.md).
        Values left None are the pack's, else the defaults."""
        given: dict[str, Any] = {
            "cpus": cpus, "memory_mib": memory_mib, "env": env, "workdir": workdir,
            "user": user, "accel": accel, "kernel": kernel, "labels": labels,
            "cold": cold or None, "ports": portmap.parse_all(ports) if ports else None,
            "net": net, "allow_hosts": allow_hosts, "allow_cidrs": allow_cidrs,
            "deny_all": deny_all or None, "allow_private": allow_private or None,
            "add_hosts": add_hosts}
        given = {k: v for k, v in given.items() if v is not None}
        if from_pack is not None:
            _one_source(image, from_pack)
            spec = self.import_pack(from_pack, box_name=name, **given)
        else:
            spec = BoxSpec(image=image or "busybox", **given)
        return self.run_spec(spec, name=name, rm=rm, detach=detach)

    def run_spec(self, spec: BoxSpec, *, name: str | None = None, rm: bool = True,
                 detach: bool = False, progress: Progress = QUIET) -> Box:
        """run() for a ready-made BoxSpec. Without detach the VM dies with this process.
        A pool's spare of the spec's shape is taken when there is one (add_pool)."""
        from microbox.core import lifecycle, pool
        from microbox.images import store

        spec = self._with_image(spec, progress)
        taken = pool.claim(self.db, spec, name=name, auto_remove=rm, attached=not detach,
                           log=self.log)
        if taken is not None:
            return Box(self, taken.record, started=taken, remove=rm, owned=True)
        with store.using():
            record, lock = lifecycle.create(self.db, spec, name=name, auto_remove=rm,
                                            start_next=True)
        started = lifecycle.start(self.db, record, lock, attached=not detach, log=self.log)
        return Box(self, started.record, started=started, remove=rm, owned=True)

    # -- packs ---------------------------------------------------------------

    def pack_image(self, name: str, path: str | Path, *,
                   progress: Progress = QUIET) -> PackInfo:
        """Write the image `name` (built or pulled if missing, as `run` does) to
        the pack file `path`: its disk, its config, a default box spec."""
        from microbox.images import builtin, store
        from microbox.images import pack as packs

        image = builtin.ensure(self.db, name, progress=progress)
        with store.using():  # `image rm` cannot take the file while it is read
            return packs.write(Path(path), image.path, disk_format="raw", kind="image",
                               source={"image": image.name, "digest": image.digest},
                               config=image.config, spec=BoxSpec(image=image.name),
                               progress=progress)

    @staticmethod
    def inspect_pack(path: str | Path, *, progress: Progress = QUIET) -> PackInfo:
        """Check a pack whole (every checksum) and read its manifest; writes nothing."""
        from microbox.images import pack as packs

        return packs.verify(Path(path), progress)

    def import_pack(self, path: str | Path, *, box_name: str | None = None,
                    progress: Progress = QUIET, **overrides: Any) -> BoxSpec:
        """Verify the pack (nothing is written unless all of it checks out), put its
        disk in the store as an image (content-addressed) and return the spec of a
        box of it: the pack's, with `overrides` (env and labels add to the pack's).
        The spec and `box_name` are checked before the store is touched."""
        from microbox.images import config as image_config
        from microbox.images import pack as packs

        info = packs.verify(Path(path), progress)
        spec = packs.merge(info.spec(info.image_name), overrides).validate()
        if box_name is not None:
            boxes_store.check_name_free(self.db.conn, validate_name(box_name))
        self._pack_requires(info)
        packs.import_verified(self.db, info, progress)
        return image_config.apply(info.config, spec)

    def _pack_requires(self, info: PackInfo) -> None:
        from microbox.images import pack as packs

        made = (info.manifest.get("requires") or {})
        here = packs.requires(BoxSpec(image=info.image_name))
        for what in ("kernel", "agent"):
            theirs = (made.get(what) or {}).get("cache_key")
            ours = here[what].get("cache_key")
            if theirs and ours and theirs != ours:
                self.log(f"the pack was made with {what} {theirs}; this host boots {ours}")

    def _with_image(self, spec: BoxSpec, progress: Progress) -> BoxSpec:
        """Make sure the image exists (built-in ones are built, registry references
        pulled), then fill the spec's defaults from its config (Env, WorkingDir, User)."""
        from microbox.images import builtin
        from microbox.images import config as image_config

        image = builtin.ensure(self.db, spec.validate().image, progress=progress)
        return image_config.apply(image.config, replace(spec, image=image.name))

    # -- finding boxes -------------------------------------------------------

    def _resolve(self, ref: str) -> BoxRecord:
        return reconcile.resolve(self.db, ref)

    def get(self, ref: str) -> Box:
        """A box by name, id or unique id prefix, reconciled with reality."""
        return Box(self, self._resolve(ref))

    def shared(self, ref: str) -> Box:
        """A handle on the box shared by every caller of this Runtime (a server's
        requests): its one agent session carries all their executions and copies,
        where separate handles would each take one of the box's few agent ports.
        Do not release or close it; `delete` through any handle forgets it."""
        record = self._resolve(ref)
        with self._shared_lock:
            box = self._shared.get(record.id)
            if box is None:
                box = self._shared[record.id] = Box(self, record)
            else:
                box.record = record
            return box

    def _forget_shared(self, box: Box) -> None:
        with self._shared_lock:
            shared = self._shared.pop(box.id, None)
        if shared is not None and shared is not box:
            shared.release()

    def list(self, *, all: bool = False, status: str | None = None,
             labels: dict[str, str | None] | None = None) -> builtins.list[Box]:
        """Boxes, reconciled (dead `--rm` boxes and abandoned creates are removed):
        running, paused and crashed ones; with all, every box; or those in `status`.
        `labels` keeps boxes that carry each key (with that value, unless None)."""
        records = reconcile.reconcile_all(self.db)
        if status is not None:
            records = [r for r in records if r.status == status and r.pool is None]
        elif not all:
            records = [r for r in records if r.status in LISTED]
        else:
            records = [r for r in records if r.pool is None]  # not a pool's box
        for key, value in (labels or {}).items():
            records = [r for r in records if key in r.spec.labels
                       and (value is None or r.spec.labels[key] == value)]
        return [Box(self, r) for r in records]

    # -- housekeeping --------------------------------------------------------

    def cleanup_candidates(self, include_running: bool = False) -> builtins.list[Box]:
        """Stopped and crashed boxes; with include_running, every box."""
        from microbox.core import maintenance

        records = maintenance.cleanup_candidates(reconcile.reconcile_all(self.db),
                                                 include_running)
        return [Box(self, r) for r in records]

    def cleanup(self, boxes: Sequence[Box]) -> builtins.list[str]:
        """Delete `boxes` (running ones are killed); returns their ids."""
        from microbox.core import lifecycle

        for box in boxes:
            lifecycle.destroy(self.db, box.record)
        return [b.id for b in boxes]

    def gc(self, dry_run: bool = False) -> GcReport:
        """Remove what no live box owns: dead --rm boxes, stray box dirs."""
        from microbox.core import maintenance

        return maintenance.gc(self.db, dry_run)

    def find_vmm(self, ref: str) -> VMM:
        """A box's VMM process, found in /proc by the box's id or a unique prefix
        of it (works with the database gone), else by the box's name, which only
        a readable database knows."""
        from microbox.core import orphans
        from microbox.errors import HostError, NotFound
        from microbox.store import readonly

        vmms = orphans.scan()
        try:
            return orphans.match(vmms, ref)
        except NotFound:
            db = paths.database()
            try:
                named = [i for i, name, _ in readonly.box_summaries(db) if name == ref] \
                    if db.exists() else []
            except HostError:  # the database cannot be read: ids still work
                named = []
            if not named:
                raise
        try:
            return orphans.match(vmms, named[0])
        except NotFound:
            raise NotFound(f"box {ref!r} has no running VMM", "microbox list --all") from None

    def kill_vmm(self, target: VMM) -> None:
        """SIGKILL a VMM found by find_vmm, after checking it is still that process."""
        from microbox.core import maintenance

        if not maintenance.kill_vmm(target):
            raise Refused(f"pid {target.pid} is no longer box {target.box_id[:12]}'s VMM; "
                          "nothing was killed")

    @staticmethod
    def doctor() -> builtins.list[Check]:
        """Read-only checks of everything microbox depends on."""
        from microbox.core import doctor

        return doctor.run_checks()

    # -- images and artifacts ------------------------------------------------

    def images(self) -> builtins.list[Image]:
        from microbox.images import store

        return store.all_images(self.db)

    def image(self, name: str) -> Image:
        """An image in the store by name (`NAME` also finds `NAME:latest`)."""
        from microbox.images import store

        return store.get(self.db, name)

    def build_image(self, name: str = "busybox", *, force: bool = False,
                    include: builtins.list[str] | None = None,
                    progress: Progress = QUIET) -> Image:
        """Build a built-in image, busybox or debian[:SUITE] (kept if already present,
        unless force, or extra packages to include)."""
        from microbox.images import builtin

        return builtin.build(self.db, name, force=force, include=include, progress=progress)

    def restore(self, snapshot: str, *, name: str | None = None, rm: bool = False,
                detach: bool = True) -> Box:
        """A new running box from a snapshot, by name or id: detached (it outlives
        this process), or without detach owned by this process as run's are
        (it dies with it; a context manager tears it down, removed with rm)."""
        from microbox.core import snapshots

        started = snapshots.start_box(self.db, snapshots.get(snapshot), name=name,
                                      auto_remove=rm, attached=not detach, log=self.log)
        box = Box(self, started.record, started=started, remove=rm, owned=not detach)
        if detach:
            box.release()
        return box

    def snapshots(self) -> builtins.list[Snapshot]:
        from microbox.core import snapshots

        return snapshots.all_snapshots()

    def snapshot(self, ref: str) -> Snapshot:
        """A snapshot by name, id or unique id prefix."""
        from microbox.core import snapshots

        return snapshots.get(ref)

    def remove_snapshot(self, ref: str, force: bool = False) -> None:
        """Delete a snapshot; one that boxes were restored from needs force (they
        keep working: its files stay until gc finds them unused)."""
        from microbox.core import snapshots

        snapshots.remove(snapshots.get(ref), force)

    def warm(self, image: str = "busybox", *, cpus: int = 1,
             memory_mib: int = DEFAULT_MEMORY_MIB, accel: str = "auto",
             net: str = plan.DEFAULT_MODE) -> str:
        """Make the warm-start template of boxes of `image` with this shape and
        network mode ahead of their first start (which would make it otherwise);
        returns its key."""
        from microbox.core import warm
        from microbox.images import store

        spec = self._with_image(BoxSpec(image=image, cpus=cpus, memory_mib=memory_mib,
                                        accel=accel, net=net), QUIET)
        found = store.get(self.db, spec.image)
        with store.using():
            return warm.warm_image(spec, found.path, found.digest, self.log).path.name

    # -- pools of ready boxes ------------------------------------------------

    def add_pool(self, image: str = "busybox", *, size: int = 1, cpus: int = 1,
                 memory_mib: int = DEFAULT_MEMORY_MIB, accel: str = "auto",
                 kernel: str | None = None, net: str = plan.DEFAULT_MODE) -> Pool:
        """Keep `size` boxes of this shape restored, run once and ready, for
        run() to take (a pool of the same shape gets the new size); returns when
        they are. Each costs a resident VMM (docs/pool.md)."""
        from microbox.core import pool

        spec = BoxSpec(image=image, cpus=cpus, memory_mib=memory_mib, accel=accel,
                       kernel=kernel, net=net)
        return pool.add(self.db, spec, size, self.log)

    def pools(self) -> builtins.list[Pool]:
        from microbox.core import pool

        return pool.listing(self.db)

    def pool(self, ref: str) -> Pool:
        """A pool by id, id prefix, or its image's name if one pool has it."""
        from microbox.core import pool

        return pool.get(self.db, ref)

    def remove_pool(self, ref: str) -> Pool:
        """Remove a pool and its waiting boxes (those run() took are not touched)."""
        from microbox.core import pool

        return pool.remove(self.db, ref)

    @staticmethod
    def builtin_images() -> builtins.list[str]:
        from microbox.images import builtin

        return list(builtin.NAMES)

    def pull(self, ref: str, *, insecure: bool = False, progress: Progress = QUIET) -> Image:
        """Pull an OCI image (`[REGISTRY/]NAME[:TAG][@DIGEST]`) into the store."""
        from microbox.images import pull as image_pull

        return image_pull.pull(self.db, ref, insecure=insecure, progress=progress)

    def import_image(self, source: str | Path | IO[bytes], name: str, *,
                     progress: Progress = QUIET) -> Image:
        """A root filesystem from a directory, a tarball (gzip, zstd or plain) or a
        binary stream of one, stored as `name`."""
        from microbox.images import importer

        return importer.import_rootfs(self.db, source, name, progress=progress)

    def remove_image(self, name: str, *, force: bool = False) -> Image:
        """Remove an image name; refused while a box or a snapshot uses it unless
        force (they keep the disk's backing file: it is unlinked only once nothing
        uses it)."""
        from microbox.images import store

        return store.remove(self.db, name, force, _snapshot_images())

    def prune_images(self, *, all: bool = False) -> builtins.list[str]:
        """Remove unnamed image files, unused cached layers, abandoned work; with all,
        also every image no box or snapshot uses."""
        from microbox.images import store

        return store.prune(self.db, all, _snapshot_images())

    def image_users(self, name: str) -> builtins.list[str]:
        """Names of the boxes whose disk is backed by the image `name`."""
        from microbox.images import store

        return store.boxes_using(self.db, self.image(name).digest)

    def tag_image(self, source: str, target: str) -> Image:
        from microbox.images import importer, store

        return store.tag(self.db, source, importer.valid_name(target))

    @staticmethod
    def login(registry: str, username: str, password: str, *, insecure: bool = False) -> None:
        """Check credentials with the registry and keep them (0600) for pulls."""
        from microbox.images import auth, reference, skopeo

        skopeo.login(registry, username, password, auth.prepare_own_file(),
                     plain_http=insecure or reference.is_loopback(registry))

    def build_kernel(self, *, force: bool = False, progress: Progress = QUIET) -> Path:
        """Build the guest kernel (minutes, once; cached), saying each step."""
        from microbox.artifacts import kernel as kernel_build

        def say(text: str) -> None:
            self.log(text)
            progress.step(text)

        try:
            return kernel_build.build_kernel(force=force, log=say)
        except kernel_build.KernelBuildError as exc:
            raise BuildError(str(exc)) from None

    @staticmethod
    def build_agent(*, force: bool = False) -> Path:
        """The guest agent's initramfs, and the box shim beside it (host side)."""
        from microbox.artifacts import agent as agent_build
        from microbox.artifacts import shim as shim_build

        shim_build.build_shim(force=force)
        return agent_build.build_agent(force=force)

    # -- the runtime itself --------------------------------------------------

    def close(self) -> None:
        with self._shared_lock:
            shared, self._shared = list(self._shared.values()), {}
        for box in shared:
            box.release()
        with self._db_lock:
            db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(Exception):
                db.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _snapshot_images() -> dict[str, builtins.list[str]]:
    """The image files snapshots need, by digest: the names of those snapshots."""
    from microbox.core import snapshots

    needed: dict[str, builtins.list[str]] = {}
    for snap in snapshots.all_snapshots():
        needed.setdefault(snap.image_digest, []).append(snap.name)
    return needed
