"""The Runtime: the SDK's entry point, holding one collection per resource as
docker-py's client does (`client.containers`, `client.images`):

    rt.boxes      create, run, get, list, restore, shared, cleanup
    rt.images     list, get, build, pull, push, import_rootfs, remove, prune, tag, warm, packs
    rt.snapshots  list, get, remove (a Box makes them: box.snapshot(), box.fork())
    rt.pools      add, list, get, remove
    rt.host       doctor, gc, find_vmm, kill_vmm, build_kernel, build_agent
    rt.events()   the event log: what was done to boxes, and (follow) what is done next

    import microbox
    with microbox.Runtime() as rt, rt.boxes.run("busybox") as box:
        result = box.run(["echo", "hello"])

Leaving the `with` block always tears the VM down, and a box started by this
process dies with it even if the process is SIGKILLed (PR_SET_PDEATHSIG).
Everything here is safe to call from many threads at once: the database gives
each thread its own connection, and a Box's agent session multiplexes any
number of concurrent executions. `microbox.sdk.aio` is the asyncio face.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from microbox.sdk.context import Context

if TYPE_CHECKING:
    from microbox.sdk.boxes import Boxes
    from microbox.sdk.host import Host
    from microbox.sdk.images import Images
    from microbox.sdk.pools import Pools
    from microbox.sdk.snapshots import Snapshots
    from microbox.sdk.volumes import Volumes
    from microbox.store.events import Event


class Runtime(Context):
    """Makes and finds boxes, images, snapshots and pools under MICROBOX_HOME.
    Each collection is made (and its module imported) on first use: `microbox
    exec` needs only `boxes`."""

    @functools.cached_property
    def boxes(self) -> Boxes:
        from microbox.sdk.boxes import Boxes

        return Boxes(self)

    @functools.cached_property
    def images(self) -> Images:
        from microbox.sdk.images import Images

        return Images(self)

    @functools.cached_property
    def snapshots(self) -> Snapshots:
        from microbox.sdk.snapshots import Snapshots

        return Snapshots(self)

    @functools.cached_property
    def pools(self) -> Pools:
        from microbox.sdk.pools import Pools

        return Pools(self)

    @functools.cached_property
    def volumes(self) -> Volumes:
        from microbox.sdk.volumes import Volumes

        return Volumes(self)

    @functools.cached_property
    def host(self) -> Host:
        from microbox.sdk.host import Host

        return Host(self)

    def events(self, *, since: float | None = None, until: float | None = None,
               filters: Mapping[str, str | Sequence[str]] | None = None,
               follow: bool = False, stop: threading.Event | None = None
               ) -> Iterator[Event]:
        """The event log (store/events.py), oldest first: events at or after
        `since`, up to `until` (UNIX seconds), matching `filters` (box=, type=,
        image=; values of one key are alternatives); with `follow`, then each new
        one as it is written, until `until` passes or `stop` is set."""
        from microbox.store import events

        return events.read(since=since, until=until, filters=filters, follow=follow,
                           stop=stop)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
