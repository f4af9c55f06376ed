"""`rt.volumes`: named volumes, ext4 disks that outlive boxes (docker-py's
`client.volumes`; docs/mounts.md)."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from microbox.sdk.context import Context

if TYPE_CHECKING:
    from microbox.volumes import Volume


class Volumes:
    def __init__(self, ctx: Context) -> None:
        self._rt = ctx

    def create(self, name: str, *, size: int | str | None = None) -> Volume:
        """A new empty volume of `size` bytes (or "10G"; default 10 GiB, sparse)."""
        from microbox import volumes

        given = volumes.DEFAULT_SIZE if size is None else (
            volumes.parse_size(size) if isinstance(size, str) else size)
        return volumes.create(name, given)

    def list(self) -> builtins.list[Volume]:
        from microbox import volumes

        return volumes.all_volumes()

    def get(self, name: str) -> Volume:
        from microbox import volumes

        return volumes.get(name)

    def users(self, name: str) -> builtins.list[str]:
        """The boxes that mount the volume (any status)."""
        from microbox import volumes

        return [box for box, _ro, _status in volumes.users(self._rt.db, name)]

    def remove(self, name: str) -> Volume:
        """Remove a volume no box mounts; refused (naming the box) otherwise."""
        from microbox import volumes

        return volumes.remove(self._rt.db, name)
