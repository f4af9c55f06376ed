"""Images microbox makes itself (busybox, debian[:SUITE]) and how a name given to
`run`/`create` becomes an image: the store, else a built-in build, else a pull
when the name looks like a registry reference."""

from __future__ import annotations

from microbox.errors import NotFound
from microbox.images import filestore, reference
from microbox.images.busybox import BUSYBOX
from microbox.images.debian import DEBIAN
from microbox.images.progress import QUIET, Progress
from microbox.store.db import Database
from microbox.store.images import Image

NAMES = (BUSYBOX, DEBIAN)

# The builders and the registry client are imported when an image is built or
# pulled: a box of an image already in the store (every start but the first)
# needs neither.


def is_builtin(name: str) -> bool:
    return name.partition(":")[0] in NAMES and "/" not in name


def build(db: Database, name: str, *, force: bool = False, include: list[str] | None = None,
          progress: Progress = QUIET) -> Image:
    """Build a built-in image (kept if already present, unless force or include)."""
    from microbox.images import busybox, debian

    base, _, suite = name.partition(":")
    if not is_builtin(name) or (base == BUSYBOX and suite):
        raise NotFound(f"no built-in image named {name!r} (there are {', '.join(NAMES)})")
    if base == DEBIAN:
        name = debian.name_for(suite or None)
    with filestore.build_lock(name):
        known = filestore.find(db, name)
        if known is not None and not force and not include:
            return known
        if base == BUSYBOX:
            return busybox.build(db)
        return debian.build(db, suite or None, include, progress, force=force)


def ensure(db: Database, name: str, *, progress: Progress = QUIET) -> Image:
    """The image `name` for a new box: in the store, built, or pulled."""
    image = filestore.find(db, name)
    if image is not None:
        return image
    if is_builtin(name):
        return build(db, name, progress=progress)
    if reference.looks_remote(name):
        from microbox.images import pull

        return pull.pull(db, name, progress=progress)
    raise NotFound(f"no image named {name!r}", "microbox image list")
