"""`rt.snapshots`: the snapshots of one data dir (`box.snapshot()` and
`box.fork()` make them; `rt.boxes.restore` starts a box from one)."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from microbox.sdk.context import Context

if TYPE_CHECKING:
    from microbox.core.snapshots import Snapshot


class Snapshots:
    def __init__(self, ctx: Context) -> None:
        self._rt = ctx

    def list(self) -> builtins.list[Snapshot]:
        from microbox.core import snapshots

        return snapshots.all_snapshots()

    def get(self, ref: str) -> Snapshot:
        """A snapshot by name, id or unique id prefix."""
        from microbox.core import snapshots

        return snapshots.get(ref)

    def remove(self, ref: str, force: bool = False) -> None:
        """Delete a snapshot; one that boxes were restored from needs force (they
        keep working: its files stay until gc finds them unused)."""
        from microbox.core import snapshots

        snapshots.remove(snapshots.get(ref), force)
