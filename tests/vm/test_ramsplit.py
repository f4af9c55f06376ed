"""The split of a real box's saved state checked against QEMU itself: QEMU
loads the whole stream into a VMM whose RAM is a file and saves it again with
x-ignore-shared, as snapshots did before vmm/ramsplit.py; the RAM file must
be the same byte for byte, the state's configuration and RAM setup the same,
and a box restored from the split must carry the source's state on."""

from __future__ import annotations

import os
from pathlib import Path

import microbox
from microbox.core import snapshots, vm
from microbox.core.boxdir import BoxDir, for_box
from microbox.core.log import quiet
from microbox.net import tap
from microbox.vmm import accel, migration, qmp, ramsplit
from microbox.vmm.qemu_argv import RAM_ID


def _qemu_converts(box: microbox.Box, full: Path, d: Path) -> None:
    """QEMU's own conversion of `full` into d/mem and d/state."""
    spec = box.record.spec
    conv = BoxDir(d / "vm")
    conv.path.mkdir(mode=0o700)
    held = conv.take_lock()
    assert held is not None
    vm.create_disk(full.parent / "disk.qcow2", conv.disk, "qcow2")
    art = vm.artifacts(spec)
    fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with tap.scratch(spec.net) as tap_fd:
            running = vm.launch(conv, spec, held, attached=True, log=quiet, art=art,
                                choice=accel.choose(spec.accel, art.qemu, art.kernel),
                                memory=vm.Memory(d / "mem", shared=True), incoming=True,
                                inherit=(fd,), tap_fd=tap_fd)
        try:
            with qmp.session(conv.qmp, conv.qmp_lock, 60.0) as mon:
                migration.load(mon, fd, ignore_shared=False, what="load", timeout=60.0)
                migration.save(mon, d / "state", ignore_shared=True, what="save", timeout=60.0)
                migration.quit(mon)
        finally:
            running.kill()
    finally:
        os.close(fd)


def _same_file(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 22), fb.read(1 << 22)
            if x != y:
                return False
            if not x:
                return True


def test_the_split_equals_qemus_own_and_restores(tmp_path: Path) -> None:
    saved, ours, theirs = tmp_path / "saved", tmp_path / "ours", tmp_path / "qemu"
    for d in (saved, ours, theirs):
        d.mkdir()
    with microbox.Runtime() as rt, rt.boxes.run("busybox", name="splitsrc") as src:
        src.run(["sh", "-c", "head -c 3000000 /dev/urandom > /dev/shm/r; "
                             "sha256sum /dev/shm/r > /root/sum"])
        snapshots._save_full(for_box(src.id), saved)
        ramsplit.split(saved / "full", RAM_ID, ours / "mem", ours / "state")
        _qemu_converts(src, saved / "full", theirs)
    assert _same_file(ours / "mem", theirs / "mem")
    assert os.stat(ours / "mem").st_blocks <= os.stat(theirs / "mem").st_blocks  # holes stay
    mine, qemus = (ours / "state").read_bytes(), (theirs / "state").read_bytes()
    setup = mine.index(b"\x00\x00\x00\x00\x00\x00\x00\x10\x7e") + 13  # the RAM setup's end
    assert mine[:setup] == qemus[:setup]
    assert mine.endswith((saved / "full").read_bytes()[-20000:])  # devices as they were


def test_a_box_restored_from_a_split_snapshot_goes_on() -> None:
    with microbox.Runtime() as rt, rt.boxes.run("busybox", name="splitgo") as src:
        src.run(["sh", "-c", "head -c 3000000 /dev/urandom > /dev/shm/r; "
                             "sha256sum /dev/shm/r > /root/sum"])
        snap = src.snapshot("split-go")
        box = rt.boxes.restore(snap.id, name="splitgo-2")
        try:
            assert box.run(["sha256sum", "-c", "/root/sum"]).exit_code == 0
        finally:
            box.delete(force=True)
            rt.snapshots.remove(snap.id, force=True)
            rt.host.gc()
