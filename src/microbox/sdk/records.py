"""What the SDK says about a box, as one typed record with one JSON rendering:
`microbox inspect --json`, `ls --json`, the HTTP API's responses (its schema is
this dataclass) and MCP's box entries all come from it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BoxInfo:
    id: str
    name: str
    image: str
    status: str
    cpus: int
    memory_mib: int
    auto_remove: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    pid: int | None
    last_error: str | None
    image_digest: str | None
    labels: dict[str, str]
    spec: dict[str, Any]
    dir: str
    alive: bool
    net: dict[str, Any]  # mode; with user: proxy, effective policy, refused; with tap: links
    template: str | None = None  # the warm-start template its disk is backed by
    # host folders and volumes: {type, source, target, read_only} each (docs/mounts.md)
    mounts: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
