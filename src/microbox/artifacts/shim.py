"""Building the box shim (Go, static; host/shim) into the cache: the small host
process that owns a box's agent ports and port forwards (docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

from microbox import paths
from microbox.artifacts import gobuild


def binary_path() -> Path:
    return paths.cache() / "shim" / gobuild.cache_key(gobuild.source_dir("shim")) / "microbox-shim"


def build_shim(*, force: bool = False) -> Path:
    path = binary_path()
    if force or not path.exists():
        gobuild.build(gobuild.source_dir("shim"), path, "the box shim")
    return path
