"""A running box's disk cut into layers, as a Dockerfile build needs them.

A box writes into its top file, a qcow2 overlay over its image (or over an
earlier layer). `cut` makes what the top holds now a layer file of its own and
lets the box write on in a fresh, empty overlay over that layer, without
stopping it for more than a moment:

1. the caller has run `sync` in the guest, so the file system is on the disk;
2. the layer's name is made a hard link to the top file (same file: QEMU's
   open descriptor and its name both stay as they are; QEMU may reopen a
   file by its name, so no name QEMU knows is ever renamed or reused);
3. an empty overlay whose backing file is the layer's name is written under
   a new name in the box dir;
4. with the vCPUs stopped (core/freeze.py), which makes QEMU drain the drive
   and write out what it holds of the file's qcow2 tables, QMP
   `blockdev-snapshot-sync` (mode `existing`) puts that overlay on top of the
   drive: every later write lands in it, and the layer is never written again.

So the layer can be cached, backed by later layers and read by `qemu-img`
while the box still runs. A failure removes the new names and leaves the box
writing where it was.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from microbox.core import freeze
from microbox.core.boxdir import BoxDir
from microbox.vmm import qcow2, qmp

DRIVE = "root"  # the -drive id of the box's disk (vmm/qemu_argv.py)


def cut(box: BoxDir, top: Path, layer: Path) -> Path:
    """Make the box's disk as it is now (its top file `top`) the file `layer`
    (on the same file system) and continue the box in a new overlay over it;
    returns the new top's path."""
    tmp = layer.with_name(f".{layer.name}.{secrets.token_hex(4)}")
    os.link(top, tmp)
    new = box.path / f"top-{secrets.token_hex(4)}.qcow2"
    try:
        os.replace(tmp, layer)
        qcow2.create_overlay(layer, new, "qcow2")
        with qmp.session(box.qmp, box.qmp_lock) as mon, freeze.stopped(box, mon):
            args: dict[str, Any] = {"device": DRIVE, "snapshot-file": str(new),
                                    "format": "qcow2", "mode": "existing"}
            mon.execute("blockdev-snapshot-sync", **args)
    except BaseException:
        tmp.unlink(missing_ok=True)
        layer.unlink(missing_ok=True)
        new.unlink(missing_ok=True)
        raise
    return new
