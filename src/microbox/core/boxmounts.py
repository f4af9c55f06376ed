"""A box's mounts as its VM's devices and its HELLO's `mounts`, and the
check after the handshake that each is mounted (docs/mounts.md).

Host folders are virtio-9p devices (tags mb0, mb1, ...), volumes virtio-blk
disks (serials mbvol0, ...). The agent mounts what the HELLO that boots or
restores the box names, before it answers, so no command runs without them.

Warm start: a box whose mounts are host folders only (at most FOLDER_SLOTS)
restores from a template made with FOLDER_SLOTS 9p devices that export an
empty placeholder folder and are mounted by nobody (QEMU will not migrate a
VM while a 9p export is mounted in it). The restored VMM gets the same devices
with the box's own folders behind them, and the HELLO mounts them. A volume's
disk cannot stand in for a placeholder (the guest learnt the placeholder's
size when the template booted), so a box with a volume boots cold.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from microbox import paths
from microbox.agent import ops
from microbox.agent.channel import Channel
from microbox.errors import AgentError, VMError
from microbox.spec import BoxSpec
from microbox.vmm.qemu_argv import Share, VolumeDisk

MOUNTS_LIMIT = 1 << 20
FOLDER_SLOTS = 4  # 9p devices of a template for boxes with host folders


def slots_for(spec: BoxSpec) -> int:
    """The 9p devices the template of this spec has (0: a template without)."""
    return FOLDER_SLOTS if any(m.kind == "bind" for m in spec.mounts) else 0


def warmable(spec: BoxSpec) -> bool:
    """Whether a box of this spec can restore from a template."""
    binds = [m for m in spec.mounts if m.kind == "bind"]
    return len(binds) == len(spec.mounts) and len(binds) <= FOLDER_SLOTS


def placeholder() -> Path:
    """The empty folder a template's unused 9p devices export (read-only)."""
    d = paths.templates_dir() / "empty-folder"
    d.mkdir(mode=0o755, parents=True, exist_ok=True)
    return d


def _model() -> str:
    return "mapped-xattr" if os.geteuid() == 0 else "none"


def devices(spec: BoxSpec, folder_slots: int = 0) -> tuple[tuple[Share, ...],
                                                           tuple[VolumeDisk, ...]]:
    """The spec's 9p shares (padded with placeholders to `folder_slots`) and
    volume disks, in the order hello() names them."""
    from microbox import volumes

    shares: list[Share] = []
    disks: list[VolumeDisk] = []
    for m in spec.mounts:
        if m.kind == "bind":
            # the folder as it resolves now: QEMU exports that directory alone
            shares.append(Share(f"mb{len(shares)}", _real(m.source), m.read_only, _model()))
        else:
            vol = volumes.get(m.source)
            if m.read_only:
                volumes.settle(vol)
            disks.append(VolumeDisk(f"mbvol{len(disks)}", vol.path, m.read_only))
    while len(shares) < folder_slots:
        shares.append(Share(f"mb{len(shares)}", placeholder(), True, _model()))
    return tuple(shares), tuple(disks)


def hello(spec: BoxSpec) -> tuple[str, ...]:
    """The HELLO's `mounts`: KIND:SOURCE:MODE:HEXTARGET, as devices() numbers them."""
    out = []
    folders = vols = 0
    for m in spec.mounts:
        mode = "ro" if m.read_only else "rw"
        if m.kind == "bind":
            kind, source = ("9pc" if m.cached else "9p"), f"mb{folders}"
            folders += 1
        else:
            kind, source = "blk", f"mbvol{vols}"
            vols += 1
        out.append(f"{kind}:{source}:{mode}:{m.target.encode().hex()}")
    return tuple(out)


def _real(source: str) -> Path:
    path = Path(os.path.realpath(source))
    if not path.is_dir():
        raise VMError(f"the host folder {source} is gone; create it again or start the "
                      "box without it")
    return path


def verify(channel: Channel, spec: BoxSpec) -> None:
    """Fail the start unless every mount is in the box's /proc/mounts."""
    if not spec.mounts:
        return
    buf = io.BytesIO()
    try:
        ops.get_file(channel, "/proc/mounts", buf, MOUNTS_LIMIT)
    except AgentError as exc:
        raise VMError(f"cannot read the box's mounts: {exc.message}") from None
    mounted = {line.split()[1].encode().decode("unicode_escape")
               for line in buf.getvalue().decode(errors="replace").splitlines()
               if len(line.split()) > 2}
    for m in spec.mounts:
        if os.path.normpath(m.target) not in mounted:
            raise VMError(f"-v {m} was not mounted in the box (its console log says why: "
                          "microbox logs BOX)")
