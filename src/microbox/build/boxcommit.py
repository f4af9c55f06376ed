"""`microbox commit`: a box's disk and configuration made an image, the box
left as it was.

A running box is synced (`sync` in the guest, so its files are on the disk),
then its vCPUs are stopped for the copy (QEMU drains and flushes the disk on
`stop`; core/freeze.py lets it run again whatever happens) while the disk's
chain is flattened; the checks and the store's rename come after it runs
again. A paused box is copied as it is; a stopped one under its box lock, so
that nothing starts it meanwhile.

The image's configuration is the box's image's, with the box's own env,
working directory and user over it, and then the `--change` instructions
(Docker's list: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR,
STOPSIGNAL, VOLUME).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace

from microbox import locks
from microbox.build.dockerfile import parse
from microbox.core import freeze
from microbox.core.boxdir import box_dir
from microbox.errors import ExecFailed, StateError, UsageError
from microbox.images import commit, filestore, importer, pack
from microbox.images.config import ImageConfig
from microbox.images.progress import QUIET, Progress
from microbox.store import events
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database
from microbox.store.images import Image
from microbox.store.status import AT_REST, Status
from microbox.vmm import qmp

CHANGES = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "USER", "WORKDIR", "STOPSIGNAL",
           "VOLUME")


def config_of(db: Database, record: BoxRecord, changes: list[str]) -> ImageConfig:
    """The image's config: the box's image's, the box's env, working directory
    and user over it, then the `--change` instructions."""
    image = filestore.find(db, record.image)
    base = image.config if image is not None else ImageConfig()
    spec = record.spec
    config = replace(base, env={**base.env, **spec.env}, workdir=spec.workdir or base.workdir,
                     user=spec.user or base.user)
    if not changes:
        return config
    plan = parse("FROM box\n" + "\n".join(changes) + "\n", build_args={}, target=None,
                 path="--change")
    for ins in plan.stages[0].instructions:
        if ins.keyword not in CHANGES:
            raise UsageError(f"--change {ins.keyword} is not allowed; use one of "
                             + ", ".join(CHANGES))
    return plan.with_base_config(0, config).stage(0).config


def commit_box(db: Database, record: BoxRecord, name: str, changes: list[str], *,
               sync: Callable[[], object], progress: Progress = QUIET) -> Image:
    """The image `name` of the box `record` (reconciled by the caller); `sync`
    runs `sync` in it (an image without one raises ExecFailed)."""
    importer.valid_name(name)
    config = config_of(db, record, changes)  # a bad --change fails before any copy
    d = box_dir(record)
    source = f"commit {record.name} ({record.id[:12]})"
    with filestore.staging() as tmp:
        raw = tmp / "disk.raw"
        if record.status in AT_REST:
            held = locks.try_acquire(d.lock)
            if held is None:
                raise StateError(f"box '{record.name}' is being started by another command")
            with held:
                progress.step(f"copying the disk of {record.name}")
                pack.flatten_disk(d.disk, "qcow2", raw)
        elif record.status in (Status.RUNNING, Status.PAUSED):
            if record.status == Status.RUNNING:
                with contextlib.suppress(ExecFailed):  # an image without `sync`
                    sync()
            with qmp.session(d.qmp, d.qmp_lock) as mon, freeze.stopped(d, mon):
                progress.step(f"copying the disk of {record.name} (paused meanwhile)")
                pack.flatten_disk(d.disk, "qcow2", raw)
        else:
            raise StateError(f"box '{record.name}' is {record.status} and cannot be committed",
                             f"microbox inspect {record.name}")
        image = commit.store_raw(db, name, raw, digest=None, config=config,
                                 source=source, progress=progress)
    events.of_box("commit", record, new_image=name)
    return image

