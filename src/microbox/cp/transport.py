"""The agent's tar transport: `tar_get` and `tar_put` (docs/protocol.md).

Being added to microbox.agent on another branch; until it lands, these say so.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from typing import Any

from microbox.agent.channel import Channel
from microbox.errors import AgentError


def _op(name: str) -> Any:
    for module in ("microbox.agent.transfer", "microbox.agent.ops"):
        try:
            fn = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if fn is not None:
            return fn
    raise AgentError("this microbox has no tar transport to the box yet")


def tar_get(channel: Channel, path: str) -> Iterator[bytes]:
    """A tar stream of the guest `path`, its top entry named after the path's base name."""
    it: Iterator[bytes] = _op("tar_get")(channel, path)
    return it


def tar_put(channel: Channel, path: str, chunks: Iterable[bytes]) -> None:
    """Extract the tar `chunks` into the existing guest directory `path`."""
    _op("tar_put")(channel, path, chunks)
