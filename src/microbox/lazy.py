"""Names a package or module offers that are imported on first use (PEP 562),
so importing it stays cheap for a program that never touches them: `microbox`
(the CLI starts without the SDK), `microbox.sdk` and `microbox.workspace`
(`microbox exec` loads neither images, snapshots nor git workspaces)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def attributes(owner: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that gives each name of `where` from the module
    it maps to, imported then."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {owner!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
