"""`rt.boxes`: making, finding and removing boxes (docker-py's `client.containers`).

`run` is the one place the Docker rules of a box's main command live (the
image's Entrypoint and Cmd, `command`, `entrypoint`): the CLI's `run`, the HTTP
API's `POST /boxes` and MCP's `create_box` each make this one call.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from microbox import mounts as box_mounts
from microbox import portmap
from microbox.core import reconcile
from microbox.errors import UsageError
from microbox.images.progress import QUIET, Progress
from microbox.mounts import Mount
from microbox.net import cacerts
from microbox.portmap import PortMap
from microbox.sdk.box import Box
from microbox.sdk.context import Context
from microbox.sdk.images import Images
from microbox.spec import DEFAULT_CMD, DEFAULT_IMAGE, BoxSpec
from microbox.store.status import LISTED

if TYPE_CHECKING:
    from microbox.sdk.stats import BoxStats


class Boxes:
    """The boxes of one Runtime's data dir."""

    def __init__(self, ctx: Context) -> None:
        self._rt = ctx
        self._images = Images(ctx)

    def create(self, image: str | None = None, *, name: str | None = None,
               start: bool = False, spec: BoxSpec | None = None,
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
               trust_host_ca: bool | None = None) -> Box:
        """A box of `image` (default debian), of a ready-made `spec`, or of the pack
        `from_pack` (its spec, with these values: env and labels add to the pack's,
        the others replace its own); stopped unless `start` (then detached).
        `ca_certs` (PEM files or PEM text) and `trust_host_ca` (None: the host's
        MICROBOX_TRUST_HOST_CA) are the CAs the box trusts besides its image's."""
        from microbox.core import lifecycle
        from microbox.images import filestore

        made = self._spec(image, spec, from_pack, name, progress, _given(locals()))
        with filestore.using():  # `image rm` cannot take the file between resolve and disk
            record, lock = lifecycle.create(self._rt.db, made, name=name, start_next=start)
        if not start:
            lock.close()
            return Box(self._rt, record)
        started = lifecycle.start(self._rt.db, record, lock, attached=False, log=self._rt.log)
        return Box(self._rt, started.record, started=started)

    def run(self, image: str | None = None, command: Sequence[str] = (), *,
            entrypoint: str | None = None, detach: bool = False, rm: bool = True,
            name: str | None = None, spec: BoxSpec | None = None,
            from_pack: str | Path | None = None, progress: Progress = QUIET,
            cpus: int | None = None, memory_mib: int | None = None,
            env: dict[str, str] | None = None, workdir: str | None = None,
            user: str | None = None, accel: str | None = None, kernel: str | None = None,
            labels: dict[str, str] | None = None, cold: bool = False,
            ports: Sequence[str | PortMap] | None = None, net: str | None = None,
            allow_hosts: Sequence[str] | None = None, allow_cidrs: Sequence[str] | None = None,
            deny_all: bool = False, allow_private: bool = False,
            add_hosts: Sequence[str] | None = None,
            mounts: Sequence[str | Mount] | None = None,
            ca_certs: Sequence[str | Path] | None = None,
            trust_host_ca: bool | None = None) -> Box:
        """Create and start a box (taken from a pool of its shape when one has a box
        ready), restored from its image's warm-start template unless `cold`.

        Its main command is Docker's: `entrypoint` (else the image's Entrypoint)
        followed by `command` (else the image's Cmd); `box.main` holds it. With
        `detach` the box runs it as its main process (the box stops when it
        exits; none runs if the image names none), outlives this process and is
        returned released. Without, the box is this process's (it dies with it,
        even on SIGKILL; a context manager tears it down, removed with `rm`), and
        `box.main` (a shell if nothing is named) is the caller's to run.
        `ports` publishes host ports ("8080:80"); `net` is user (default), tap or
        none with the egress policy of allow_hosts, allow_cidrs, deny_all,
        allow_private and add_hosts; `ca_certs` and `trust_host_ca` as in create
        (docs/net.md)."""
        from microbox.core import lifecycle, pool
        from microbox.images import filestore

        made = self._spec(image, spec, from_pack, name, progress, _given(locals()))
        taken = pool.claim(self._rt.db, made, name=name, auto_remove=rm, attached=not detach,
                           log=self._rt.log)
        if taken is not None:
            box = Box(self._rt, taken.record, started=taken, remove=rm, owned=True)
        else:
            with filestore.using():
                record, lock = lifecycle.create(self._rt.db, made, name=name, auto_remove=rm,
                                                start_next=True)
            started = lifecycle.start(self._rt.db, record, lock, attached=not detach,
                                      log=self._rt.log)
            box = Box(self._rt, started.record, started=started, remove=rm, owned=True)
        try:
            box.main = box.command(command, entrypoint)
            if detach and box.main:
                box.exec(box.main, detach=True, main=True)
        except BaseException:
            box.close()  # made for this command: removed or stopped
            raise
        if detach:
            box.release()
        elif not box.main:
            box.main = list(DEFAULT_CMD)
        return box

    def restore(self, snapshot: str, *, name: str | None = None, rm: bool = False,
                detach: bool = True) -> Box:
        """A new running box from a snapshot, by name or id: detached (it outlives
        this process), or without detach owned by this process as run's are."""
        from microbox.core import snapshots

        started = snapshots.start_box(self._rt.db, snapshots.get(snapshot), name=name,
                                      auto_remove=rm, attached=not detach, log=self._rt.log)
        box = Box(self._rt, started.record, started=started, remove=rm, owned=not detach)
        if detach:
            box.release()
        return box

    def get(self, ref: str) -> Box:
        """A box by name, id or unique id prefix, reconciled with reality."""
        return Box(self._rt, reconcile.resolve(self._rt.db, ref))

    def watch_stats(self, refs: Sequence[str] = (), *, interval: float = 1.0,
                    stream: bool = True, stop: threading.Event | None = None
                    ) -> Iterator[builtins.list[BoxStats]]:
        """A reading of each box in `refs` (default: every running and paused
        box) every `interval` s, until `stop` is set (once, without `stream`)."""
        from microbox.sdk import stats

        return stats.watch(self, refs, interval=interval, stream=stream, stop=stop)

    def shared(self, ref: str) -> Box:
        """A handle on the box shared by every caller of this Runtime (a server's
        requests): its one agent session carries all their executions and copies,
        where separate handles would each take one of the box's few agent ports.
        Do not release or close it; `delete` through any handle forgets it."""
        record = reconcile.resolve(self._rt.db, ref)
        box = cast(Box, self._rt.share(record.id, Box(self._rt, record)))
        box.record = record
        return box

    def list(self, *, all: bool = False, status: str | None = None,
             labels: dict[str, str | None] | None = None) -> builtins.list[Box]:
        """Boxes, reconciled (dead `--rm` boxes and abandoned creates are removed):
        running, paused and crashed ones; with all, every box; or those in `status`.
        `labels` keeps boxes that carry each key (with that value, unless None)."""
        records = reconcile.reconcile_all(self._rt.db)
        if status is not None:
            records = [r for r in records if r.status == status and r.pool is None]
        elif not all:
            records = [r for r in records if r.status in LISTED]
        else:
            records = [r for r in records if r.pool is None]  # not a pool's box
        for key, value in (labels or {}).items():
            records = [r for r in records if key in r.spec.labels
                       and (value is None or r.spec.labels[key] == value)]
        return [Box(self._rt, r) for r in records]

    def cleanup_candidates(self, include_running: bool = False) -> builtins.list[Box]:
        """Stopped and crashed boxes; with include_running, every box."""
        from microbox.core import maintenance

        records = maintenance.cleanup_candidates(reconcile.reconcile_all(self._rt.db),
                                                 include_running)
        return [Box(self._rt, r) for r in records]

    def cleanup(self, boxes: Sequence[Box]) -> builtins.list[str]:
        """Delete `boxes` (running ones are killed); returns their ids."""
        from microbox.core import lifecycle

        for box in boxes:
            lifecycle.destroy(self._rt.db, box.record)
        return [b.id for b in boxes]

    def _spec(self, image: str | None, spec: BoxSpec | None, from_pack: str | Path | None,
              name: str | None, progress: Progress, given: dict[str, Any]) -> BoxSpec:
        """The spec of a new box: from `spec`, or the values given over `image`'s
        defaults or a pack's, with its image made sure of (built or pulled) and
        the image's config (Env, WorkingDir, User) applied."""
        if spec is not None:
            if image is not None or from_pack is not None or given:
                raise UsageError("give a spec, or an image (or pack) and its values, not both")
            made = spec
        elif from_pack is not None:
            if image is not None:
                raise UsageError(f"give an image or a pack ({from_pack}), not both")
            made = self._images.import_pack(from_pack, box_name=name, progress=progress,
                                               overrides=_trusting_host(given))
        else:
            made = BoxSpec(image=image or DEFAULT_IMAGE, **_trusting_host(given))
        return self._images.resolve(made, progress)


def _trusting_host(given: dict[str, Any]) -> dict[str, Any]:
    """`given`, with the host's MICROBOX_TRUST_HOST_CA where trust_host_ca was not given."""
    if "trust_host_ca" not in given and cacerts.trust_host_default():
        return {**given, "trust_host_ca": True}
    return given


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """The spec values a caller of create/run set (None and False are unset)."""
    fields = ("cpus", "memory_mib", "env", "workdir", "user", "accel", "kernel", "labels",
              "cold", "ports", "net", "allow_hosts", "allow_cidrs", "deny_all",
              "allow_private", "add_hosts", "mounts")
    given = {k: values[k] for k in fields if values[k] not in (None, False)}
    if values["trust_host_ca"] is not None:  # False too: it beats the host's setting
        given["trust_host_ca"] = values["trust_host_ca"]
    if values["ca_certs"]:
        given["ca_certs"] = tuple(str(c) for c in values["ca_certs"])
    if "ports" in given:
        given["ports"] = portmap.parse_all(given["ports"])
    for k in ("allow_hosts", "allow_cidrs", "add_hosts"):
        if k in given:
            given[k] = tuple(given[k])
    if "mounts" in given:
        given["mounts"] = tuple(box_mounts.parse(m) if isinstance(m, str) else m
                                for m in given["mounts"])
    return given
