"""The asyncio face cannot drift from the sync SDK: every public member of
Runtime, its collections, Box, Execution and Connection has an async twin with
the same parameters (names, kinds, defaults) and the same types but for the
sync handles each twin wraps, and no public method takes `**kw: Any`."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import pytest

from microbox.connection import Connection
from microbox.execution import Execution
from microbox.sdk import aio
from microbox.sdk.box import Box
from microbox.sdk.boxes import Boxes
from microbox.sdk.host import Host
from microbox.sdk.images import Images
from microbox.sdk.pools import Pools
from microbox.sdk.runtime import Runtime
from microbox.sdk.snapshots import Snapshots
from microbox.sdk.volumes import Volumes

PAIRS: list[tuple[type, type, set[str]]] = [
    # (sync, async, sync members the async face leaves out, and why)
    # share and forget are the Box handles' registry (sdk/context.py), no user's call
    (Runtime, aio.AsyncRuntime, {"share", "forget"}),
    (Boxes, aio.AsyncBoxes, set()),
    (Images, aio.AsyncImages, set()),
    (Snapshots, aio.AsyncSnapshots, set()),
    (Pools, aio.AsyncPools, set()),
    (Volumes, aio.AsyncVolumes, set()),
    (Host, aio.AsyncHost, set()),
    # record and runtime are the sync handle's own (`.sync` reaches them);
    # __enter__/__exit__ are __aenter__/__aexit__ there
    (Box, aio.AsyncBox, {"record", "runtime"}),
    # `events` is an async iterator there (AsyncExecution.events)
    (Execution, aio.AsyncExecution, set()),
    (Connection, aio.AsyncConnection, set()),
]
# sync type name -> its async twin's, in annotations
TWINS = {"Box": "AsyncBox", "Execution": "AsyncExecution", "Connection": "AsyncConnection",
         "Runtime": "AsyncRuntime", "Iterator": "AsyncIterator"}
# Members whose async twin is not a coroutine: cheap reads, iterators, static helpers.
NOT_COROUTINES = {"id", "name", "status", "spec", "ports", "ready_after", "main", "command",
                  "pid", "sync", "follow_logs", "events", "receive", "workspace_files",
                  "builtin", "db", "log", "boxes", "images", "snapshots", "pools",
                  "host", "watch_stats"}


def _public(cls: type) -> dict[str, Any]:
    out = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        out[name] = member
    # attributes set in __init__ (collections, `main`)
    for name in _init_attributes(cls):
        out.setdefault(name, None)
    return out


def _init_attributes(cls: type) -> set[str]:
    try:
        source = inspect.getsource(cls.__init__)  # type: ignore[misc]
    except (OSError, TypeError):
        return set()
    return {m for m in re.findall(r"self\.([a-z][a-z_]*)(?::[^=]+)?\s*=", source)}


def _twin(annotation: str) -> str:
    """The annotation with each sync handle named by its twin, module prefixes
    (workspace.WorkspaceFile, builtins.list) dropped."""
    annotation = re.sub(r"\b(?:[a-z_][a-z_0-9]*\.)+(?=\w)", "", annotation)
    return re.sub(r"\b(" + "|".join(TWINS) + r")\b", lambda m: TWINS[m.group(1)], annotation)


@pytest.mark.parametrize(("sync", "async_", "left_out"), PAIRS,
                         ids=[p[0].__name__ for p in PAIRS])
def test_every_public_member_has_its_async_twin(sync: type, async_: type,
                                                left_out: set[str]) -> None:
    theirs = _public(async_)
    missing = sorted(set(_public(sync)) - set(theirs) - left_out)
    assert not missing, f"{async_.__name__} lacks {missing}"


@pytest.mark.parametrize(("sync", "async_", "left_out"), PAIRS,
                         ids=[p[0].__name__ for p in PAIRS])
def test_the_twins_take_the_same_parameters(sync: type, async_: type,
                                            left_out: set[str]) -> None:
    for name, member in _public(sync).items():
        if name in left_out or not callable(member) or isinstance(member, type):
            continue
        twin = getattr(async_, name)
        ours, theirs = _signature(member), _signature(twin)
        assert ours == theirs, f"{sync.__name__}.{name}{ours} != {async_.__name__}.{name}" \
                               f"{theirs}"
        coroutine = inspect.iscoroutinefunction(twin)
        assert coroutine == (name not in NOT_COROUTINES), \
            f"{async_.__name__}.{name} should {'not ' if coroutine else ''}be a coroutine"


def _signature(fn: Callable[..., Any]) -> list[tuple[str, str, str, str]]:
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.name != "self"]
    return [(p.name, str(p.kind), repr(p.default), _twin(str(p.annotation))) for p in params] \
        + [("->", "", "", _twin(str(sig.return_annotation)))]


@pytest.mark.parametrize("cls", [c for pair in PAIRS for c in pair[:2]],
                         ids=lambda c: c.__name__)
def test_no_public_method_takes_any_keywords(cls: type) -> None:
    for name, member in _public(cls).items():
        if callable(member) and not isinstance(member, type):
            kinds = {p.kind for p in inspect.signature(member).parameters.values()}
            assert inspect.Parameter.VAR_KEYWORD not in kinds, f"{cls.__name__}.{name}(**kw)"
