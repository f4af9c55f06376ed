"""A box's mounts as its VM's devices and boot parameters, and the check
after boot that each is mounted (docs/mounts.md).

Host folders are virtio-9p devices (tags mb0, mb1, ...), volumes virtio-blk
disks (serials mbvol0, ...); the agent mounts each one given by a
`microbox.mount=` parameter before any host connects. A box with mounts boots
cold: a warm-start template, a pool's spare and a snapshot are saved VMs whose
device set cannot grow, and QEMU will not migrate a VM while a 9p export is
mounted in it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from microbox.agent import ops
from microbox.agent.channel import Channel
from microbox.errors import AgentError, VMError
from microbox.spec import BoxSpec
from microbox.vmm.qemu_argv import Share, VolumeDisk

MOUNTS_LIMIT = 1 << 20


def devices(spec: BoxSpec) -> tuple[tuple[Share, ...], tuple[VolumeDisk, ...], str]:
    """The spec's shares, volume disks and `microbox.mount=` parameters."""
    from microbox import volumes

    shares: list[Share] = []
    disks: list[VolumeDisk] = []
    params: list[str] = []
    for m in spec.mounts:
        mode = "ro" if m.read_only else "rw"
        if m.kind == "bind":
            tag = f"mb{len(shares)}"
            # the folder as it resolves now: QEMU exports that directory alone
            shares.append(Share(tag, _real(m.source), m.read_only,
                                "mapped-xattr" if os.geteuid() == 0 else "none"))
            kind = "9pc" if m.cached else "9p"
            params.append(f"microbox.mount={kind}:{tag}:{mode}:{m.target.encode().hex()}")
        else:
            serial = f"mbvol{len(disks)}"
            vol = volumes.get(m.source)
            if m.read_only:
                volumes.settle(vol)
            disks.append(VolumeDisk(serial, vol.path, m.read_only))
            params.append(f"microbox.mount=blk:{serial}:{mode}:{m.target.encode().hex()}")
    return tuple(shares), tuple(disks), " ".join(params)


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
