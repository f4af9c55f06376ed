"""The Python SDK; the CLI, the HTTP API, the MCP server and the framework
adapters are front ends over it and orchestrate nothing of their own.

runtime.py    Runtime: the entry point, one collection per resource
boxes.py      rt.boxes: create, run (the Docker rules of a box's main command), get, list
images.py     rt.images: the store, builds, pulls, packs, warm-start templates
snapshots.py  rt.snapshots: list, get, remove
pools.py      rt.pools: pools of boxes kept ready
volumes.py    rt.volumes: named volumes, disks that outlive boxes
host.py       rt.host: doctor, gc, VMMs in /proc, guest artifacts
box.py        Box: one box's lifecycle, exec, files, logs, snapshots
records.py    BoxInfo: the one rendering of a box for --json, the API and MCP
stats.py      BoxStats: what a box costs (box.stats(), rt.boxes.watch_stats())
aio.py        the asyncio face of all of the above, checked against it by a test
aio_handles.py  its thread pool and the async twins of Execution, Connection and Box

What only some calls need is imported by those calls, so a program that only
runs commands in existing boxes (`microbox exec`) does not load it; the names
below that come from those modules are loaded on first use.

context.py    What a Runtime's collections and its Box handles share
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microbox import lazy
from microbox.execution import Execution, Result
from microbox.sdk.box import Box
from microbox.sdk.runtime import Runtime
from microbox.store.status import LIVE, STATUSES, Status

if TYPE_CHECKING:
    from microbox.core.maintenance import GcReport
    from microbox.core.orphans import VMM
    from microbox.core.pool import Pool
    from microbox.core.snapshots import Snapshot
    from microbox.images.pack import PackInfo
    from microbox.sdk.records import BoxInfo
    from microbox.sdk.stats import BoxStats
    from microbox.store.events import Event, parse_filters, parse_time
    from microbox.store.images import Image
    from microbox.workspace import WorkspaceFile, WorkspacePush, workspace_files

_LAZY = {
    "BoxInfo": "microbox.sdk.records", "BoxStats": "microbox.sdk.stats",
    "Event": "microbox.store.events", "parse_time": "microbox.store.events",
    "parse_filters": "microbox.store.events",
    "GcReport": "microbox.core.maintenance", "VMM": "microbox.core.orphans",
    "Pool": "microbox.core.pool",
    "Snapshot": "microbox.core.snapshots", "PackInfo": "microbox.images.pack",
    "Image": "microbox.store.images", "WorkspaceFile": "microbox.workspace",
    "WorkspacePush": "microbox.workspace", "workspace_files": "microbox.workspace",
}

__all__ = ["LIVE", "STATUSES", "VMM", "Box", "BoxInfo", "BoxStats", "Event", "Execution",
           "GcReport", "Image", "PackInfo", "Pool", "Result", "Runtime", "Snapshot", "Status",
           "WorkspaceFile", "WorkspacePush", "parse_filters", "parse_time", "workspace_files"]


__getattr__ = lazy.attributes(__name__, _LAZY)
