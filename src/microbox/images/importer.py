"""`image import`: a root filesystem from a directory, a tarball (gzip, zstd or
plain) or a stream of one (`docker export ctr | microbox image import - --name x`),
through the flattener into `mke2fs -d -`."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path
from typing import IO

from microbox.errors import BuildError, UsageError
from microbox.images import filestore, flatten, mkfs
from microbox.images.progress import QUIET, Progress
from microbox.store.db import Database
from microbox.store.images import Image

_NAME = re.compile(r"[a-z0-9][a-z0-9._/-]{0,199}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?")


def valid_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(f"bad image name {name!r}; use lower-case letters, digits, '.', '_', "
                         "'-' and '/', with an optional :TAG")
    return name


def _tar_directory(root: Path, dest: Path) -> None:
    """The tree under `root` as a tar (symlinks kept as links, ownership as it is)."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        for child in sorted(root.iterdir()):
            tf.add(child, arcname=child.name)


def import_rootfs(db: Database, source: str | Path | IO[bytes], name: str, *,
                  progress: Progress = QUIET) -> Image:
    valid_name(name)
    label = name.rsplit("/", 1)[-1].split(":")[0]
    with filestore.build_lock(name), filestore.staging() as tmp:
        tar = tmp / "rootfs.tar"
        if isinstance(source, (str, Path)):
            path = Path(source)
            if path.is_dir():
                progress.step(f"reading the directory {path}")
                _tar_directory(path, tar)
            elif path.is_file():
                progress.step(f"reading {path}")
                with open(path, "rb") as f:
                    _decompress(f, tar, progress)
            else:
                raise UsageError(f"{path} is neither a directory nor a tarball")
            what = str(path.resolve())
        else:
            progress.step("reading a tarball from standard input")
            _decompress(source, tar, progress)
            what = "standard input"
        out = tmp / "image.ext4"
        digest = mkfs.from_layers([tar], out, label, progress)
        return filestore.add(db, name, out, f"import {what}", digest=digest)


def _decompress(f: IO[bytes], tar: Path, progress: Progress) -> None:
    try:
        flatten.decompress(f, tar, lambda n: progress.advance(n, None))
    except BuildError as exc:
        raise UsageError(f"cannot import: {exc.message}") from None
    if not tarfile.is_tarfile(tar):
        raise UsageError("cannot import: the input is not a tar archive (plain, gzip or zstd)")
