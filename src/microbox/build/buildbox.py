"""The box a build stage's steps run in, and how its disk becomes cached layers.

A stage's steps run one after another in one box (the first one restored
from its base image's warm-start template when the stage starts there; a
stage that resumes after cached steps boots cold over the cached layer).
After each step that changes files: the processes the step left are ended
(each RUN starts from a quiet box, as in Docker, where every RUN is a new
container), the guest's file system is synced, and the disk is cut
(core/layers.py) into the step's layer; the box runs on over it.

A build box is the build's own: made attached (it dies with the build, even
on SIGKILL) and removed when the build ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import IO

from microbox.build import cache
from microbox.build.cache import Top
from microbox.core import layers, lifecycle, vm
from microbox.core.boxdir import box_dir
from microbox.errors import ExecFailed
from microbox.images import filestore
from microbox.sdk.box import Box
from microbox.sdk.context import Context
from microbox.spec import BoxSpec

Output = Callable[[bytes], None]


class BuildBox:
    """A stage's disk, and the box over it (started on first use)."""

    def __init__(self, ctx: Context, spec: BoxSpec, top: Top) -> None:
        self._ctx = ctx
        self._spec = spec
        self.top = top
        self._box: Box | None = None
        self._file: Path | None = None  # the box's top file, which its writes go to
        self._can_sync = True

    @property
    def box(self) -> Box:
        if self._box is None:
            self._box = self._start()
        return self._box

    def _start(self) -> Box:
        """A box of the stage's base image whose disk is `top`: warm from the
        image's template when `top` is the image itself, else cold."""
        spec = self._spec if self.top.layer is None else replace(self._spec, cold=True)
        db = self._ctx.db
        with filestore.using():
            record, lock = lifecycle.create(db, spec, start_next=True,
                                            image_digest=self.top.base_digest,
                                            auto_remove=True)
            try:
                if self.top.layer is not None:
                    vm.create_disk(self.top.path, box_dir(record).disk, "qcow2")
            except BaseException:
                lock.close()
                lifecycle.abandon(db, record)
                raise
        started = lifecycle.start(db, record, lock, attached=True, log=self._ctx.log)
        self._file = box_dir(record).disk
        return Box(self._ctx, started.record, started=started, remove=True, owned=True)

    def run(self, argv: list[str], *, env: dict[str, str], cwd: str | None, user: str | None,
            output: Output) -> int:
        """Run a step's command to its end, its output to `output`; its exit code."""
        ex = self.box.exec(argv, env=env, cwd=cwd, user=user)
        for _kind, data in ex.events():
            output(data)
        assert ex.status is not None
        return ex.status.exit_code

    def put_tar(self, chunks: IO[bytes] | Iterable[bytes]) -> None:
        """Extract a tar (names relative to /, owners and modes as given) at /."""
        self.box.copy_in_tar(chunks, "/")

    def put_file(self, path: str, data: bytes, mode: int) -> None:
        self.box.put(io.BytesIO(data), path, mode)

    def get_tar(self, path: str, out: IO[bytes]) -> None:
        """The tar of `path` (top entry: its base name), as `docker cp` makes it."""
        self.box.copy_out_tar(path, out)

    def cut(self, key: str) -> Top:
        """Make the disk as it is now the cached layer `key`, after ending what
        the last step left running and syncing; the box runs on over it."""
        box = self.box
        with contextlib.suppress(ExecFailed):  # kill -1 spares PID 1 (the agent) and itself
            box.run(["kill", "-KILL", "-1"])
        if self._can_sync:
            try:
                box.run(["sync"])
            except ExecFailed:  # an image without `sync` (FROM scratch)
                self._can_sync = False
        if self._can_sync:
            assert self._file is not None
            self._file = layers.cut(box_dir(box.record), self._file, cache.layer_path(key))
        else:
            # the agent syncs as it stops; the stopped disk is the layer, and
            # the next step starts a box over it
            box.stop()
            assert self._file is not None
            os.replace(self._file, cache.layer_path(key))
            self.close()
        cache.record(key, self.top)
        self.top = Top(self.top.base_digest, key)
        return self.top

    def close(self) -> None:
        """Remove the box, if one was started."""
        box, self._box = self._box, None
        if box is not None:
            box.close()
