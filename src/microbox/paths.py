"""Where microbox keeps its state (MICROBOX_HOME) and its build caches."""

from __future__ import annotations

import os
from pathlib import Path

BOX_LOCK = "lock"  # in a box's dir: the flock its VMM holds for its whole life


def home() -> Path:
    """Durable state: image store, boxes, database. Default ~/.local/share/microbox."""
    env = os.environ.get("MICROBOX_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "microbox"


def cache() -> Path:
    """Rebuildable artifacts: kernel, agent, initramfs. Default ~/.cache/microbox."""
    env = os.environ.get("MICROBOX_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "microbox"


def database() -> Path:
    """The SQLite database of boxes and images (store/db.py)."""
    return home() / "microbox.db"


def boxes_dir() -> Path:
    return home() / "boxes"


def boxes_lock() -> Path:
    """Shared by commands making a box dir, exclusive for gc sweeping them."""
    return home() / "boxes.lock"


def images_dir() -> Path:
    return home() / "images"



def pools_dir() -> Path:
    """Each pool's lock (one filler at a time) and its fillers' log."""
    return home() / "pools"


def templates_dir() -> Path:
    """Warm-start templates: a booted guest's RAM, device state and disk."""
    return home() / "templates"


def snapshots_dir() -> Path:
    """Snapshots of boxes, each in the form of a template plus its metadata."""
    return home() / "snapshots"


def volumes_dir() -> Path:
    """Named volumes: <name>/disk.ext4 each (docs/mounts.md)."""
    return home() / "volumes"
