"""`rt.pools`: pools of boxes kept restored and ready for `rt.boxes.run` to
take (docs/pool.md)."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from microbox.net import plan
from microbox.sdk.context import Context
from microbox.spec import DEFAULT_IMAGE, DEFAULT_MEMORY_MIB, BoxSpec

if TYPE_CHECKING:
    from microbox.core.pool import Pool


class Pools:
    def __init__(self, ctx: Context) -> None:
        self._rt = ctx

    def add(self, image: str = DEFAULT_IMAGE, *, size: int = 1, cpus: int = 1,
            memory_mib: int = DEFAULT_MEMORY_MIB, accel: str = "auto",
            kernel: str | None = None, net: str = plan.DEFAULT_MODE) -> Pool:
        """Keep `size` boxes of this shape restored, run once and ready, for
        boxes.run() to take (a pool of the same shape gets the new size); returns
        when they are. Each costs a resident VMM (docs/pool.md)."""
        from microbox.core import pool

        spec = BoxSpec(image=image, cpus=cpus, memory_mib=memory_mib, accel=accel,
                       kernel=kernel, net=net)
        return pool.add(self._rt.db, spec, size, self._rt.log)

    def list(self) -> builtins.list[Pool]:
        from microbox.core import pool

        return pool.listing(self._rt.db)

    def get(self, ref: str) -> Pool:
        """A pool by id, id prefix, or its image's name if one pool has it."""
        from microbox.core import pool

        return pool.get(self._rt.db, ref)

    def remove(self, ref: str) -> Pool:
        """Remove a pool and its waiting boxes (those a run took are not touched)."""
        from microbox.core import pool

        return pool.remove(self._rt.db, ref)
