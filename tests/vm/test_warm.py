"""Warm start: boxes restored from a template behave as booted ones, each is its
own machine, and a template that cannot be used is never silently trusted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

import microbox
from microbox.artifacts import agent, vmm_libs
from microbox.core import templates
from microbox.errors import ExecFailed
from microbox.store import boxes
from tests.conftest import qemu_pids, still_running
from tests.vm.conftest import wait_for
from tests.vm.helpers import mb, spawn


def _template_dirs(home: Path) -> list[str]:
    root = home / "templates"
    return sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []


@pytest.mark.parametrize("kind", ["warm", "cold", "pooled"])
def test_warm_cold_and_pooled_boxes_answer_alike(kind: str) -> None:
    with microbox.Runtime() as rt:
        spares = [s.id for s in boxes.spares(rt.db)]
        if kind == "pooled":
            rt.pools.add("busybox", size=1)
            spares = [s.id for s in boxes.spares(rt.db)]
        try:
            with rt.boxes.run("busybox", cold=kind == "cold") as box:
                assert (box.info().template is None) == (kind == "cold")
                assert (box.id in spares) == (kind == "pooled")
                _exec_suite(box)
        finally:
            for p in rt.pools.list():
                rt.pools.remove(p.id)


def _exec_suite(box: microbox.Box) -> None:
    """Exit codes, streams, signals, timeouts, a terminal, and the guest's setup."""
    r = box.run(["sh", "-c", "cat; echo err >&2; exit 3"], input=b"in")
    assert (r.exit_code, r.stdout, r.stderr) == (3, b"in", b"err\n")
    assert box.run(["sh", "-c", "kill -TERM $$"]).exit_code == 128 + signal.SIGTERM
    with pytest.raises(ExecFailed) as err:
        box.exec(["no-such-command"])
    assert err.value.exit_code == 127
    r = box.run(["sleep", "10"], timeout=0.5)
    assert r.status.timed_out and r.status.reported_code == 124
    t = box.exec(["sh", "-c", "stty size"], tty=True, rows=33, cols=101)
    assert b"33 101" in b"".join(d for _, d in t.events())
    # no background zeroing of the root disk's inode tables (agent setup.go)
    mounts = box.run(["cat", "/proc/mounts"]).stdout.decode().splitlines()
    assert any(m.startswith("/dev/vda / ext4 ") and "noinit_itable" in m for m in mounts)
    # the local APIC timer ticks, at the rate the command line gives it (kernel
    # patch 0002): a wrong rate would stretch every sleep by its error
    ev = box.run(["cat", "/sys/devices/system/clockevents/clockevent0/current_device"])
    assert ev.stdout.startswith(b"lapic"), ev.stdout
    up = box.run(["sh", "-c", "cut -d' ' -f1 /proc/uptime; sleep 0.5; "
                  "cut -d' ' -f1 /proc/uptime"]).stdout.split()
    # /proc/uptime counts hundredths: a 0.5 s sleep can read as 0.49 between
    # two truncated readings (and 1.39 - 0.89 is 0.4999... in floats)
    assert 49 <= round(100 * (float(up[1]) - float(up[0]))) < 250, up


def _thp_enabled(pid: int) -> str | None:
    """/proc/PID/status's THP_enabled (Linux 5.0 and later), else None."""
    with open(f"/proc/{pid}/status") as f:
        return next((line.split()[1] for line in f if line.startswith("THP_enabled:")), None)


def test_vmms_run_without_transparent_huge_pages() -> None:
    """Attached and detached VMMs alike (vmm/spawn.py): QEMU's huge-page advice
    on TCG's code buffer cost each idle clone ~2 MiB of Pss."""
    own = _thp_enabled(os.getpid())
    if own is None:
        pytest.skip("this host's kernel does not report THP_enabled")
    with microbox.Runtime() as rt, rt.boxes.run("busybox") as attached:
        detached = rt.boxes.run("busybox", detach=True, rm=False)
        try:
            for box in (attached, detached):
                assert box.record.pid is not None
                assert _thp_enabled(box.record.pid) == "0"
        finally:
            detached.delete(force=True)
    assert _thp_enabled(os.getpid()) == own  # the caller's own setting is untouched


def test_vmms_load_microbox_s_builds_of_libcapstone_and_libpmem() -> None:
    """Where the host's QEMU links them and a compiler is at hand, every VMM
    maps our builds (artifacts/vmm_libs.py), not the system's libraries, nor
    what the system's libpmem brings (libndctl, libkmod, libcrypto)."""
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu is not None
    ours = vmm_libs.library_dir(qemu)
    if ours is None:
        pytest.skip("this host's QEMU links neither library, or no build could be made")
    built = {p.name.split(".so")[0] for p in ours.glob("lib*.so.*")}
    with microbox.Runtime() as rt, rt.boxes.run("busybox") as box:
        assert box.record.pid is not None
        with open(f"/proc/{box.record.pid}/maps") as f:
            libs = {line.split()[-1] for line in f if "/lib" in line}
        for name in built:
            mapped = {lib for lib in libs if f"/{name}.so" in lib}
            assert mapped and all(lib.startswith(f"{ours}/") for lib in mapped), mapped
        if "libpmem" in built:
            assert not any("/libndctl.so" in lib or "/libkmod.so" in lib for lib in libs)
        assert box.run(["true"]).exit_code == 0


def test_clones_are_each_their_own_machine() -> None:
    """Distinct entropy, hostname, machine-id and a correct clock; private disks."""
    probe = ["sh", "-c", "head -c 16 /dev/urandom | od -An -tx1; hostname; "
             "cat /etc/machine-id; date +%s"]
    with microbox.Runtime() as rt:
        rt.images.warm("busybox")
        with rt.boxes.run("busybox", name="clone-a") as a, \
                rt.boxes.run("busybox", name="clone-b") as b:
            seen = {}
            for box in (a, b):
                assert box.info().template is not None
                rnd, host, mid, clock = box.run(probe).stdout.decode().splitlines()
                assert host == box.name and mid == box.id
                assert abs(int(clock) - time.time()) < 5
                seen[box.name] = rnd
                box.run(["sh", "-c", f"echo {box.name} > /root/who"])
            assert seen["clone-a"] != seen["clone-b"]
            for box in (a, b):
                assert box.run(["cat", "/root/who"]).stdout == f"{box.name}\n".encode()


def test_a_changed_agent_gets_a_new_template_and_gc_removes_the_old(fresh_home: Path) -> None:
    initrd = agent.initramfs_path()
    st = initrd.stat()
    with microbox.Runtime() as rt:
        old = rt.images.warm("busybox")
        try:
            # A rebuilt agent replaces the file: its identity (here its mtime) changes.
            os.utime(initrd, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
            with rt.boxes.run("busybox") as box:
                new = (box.info().template or "").removeprefix("templates/")
                assert new != old
                assert box.run(["true"]).exit_code == 0
                report = rt.host.gc()
                assert [Path(p).name for p in report.templates] == [old]
            assert _template_dirs(fresh_home) == [new]
        finally:
            os.utime(initrd, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_corrupt_template_is_discarded_and_the_box_boots_cold(fresh_home: Path) -> None:
    with microbox.Runtime() as rt:
        key = rt.images.warm("busybox")
        earlier = rt.boxes.run("busybox", name="earlier", rm=False, detach=True)
        state = fresh_home / "templates" / key / "state"
        state.chmod(0o644)
        state.write_bytes(b"\0garbage" * 1000)
        with rt.boxes.run("busybox") as box:
            assert box.info().template is None
            assert box.run(["echo", "ok"]).stdout == b"ok\n"
        # a box made from the template before it was discarded still has its disk
        earlier.restart()
        assert earlier.run(["echo", "still"]).stdout == b"still\n"
        earlier.delete(force=True)
        assert templates.failures() == 1
        assert (fresh_home / "templates" / key / "discarded").exists()
        doctor = json.loads(mb("doctor", "--json").stdout)["data"]
        (line,) = [c for c in doctor if c["name"] == "templates"]
        assert line["status"] == "WARN" and "1 restore(s) failed" in line["detail"]
        assert rt.host.gc().templates
        assert _template_dirs(fresh_home) == []


@pytest.mark.parametrize("damage", ["truncated", "header"])
def test_a_template_whose_disk_is_broken_is_discarded_and_the_box_boots_cold(
        fresh_home: Path, damage: str) -> None:
    """Its disk is read before any VMM starts (the box's overlay names it as its
    backing file): a template whose disk.qcow2 is not a qcow2 file any more
    failed every warm run of the image with "...is not a qcow2 file"."""
    with microbox.Runtime() as rt:
        key = rt.images.warm("busybox")
        disk = fresh_home / "templates" / key / "disk.qcow2"
        disk.chmod(0o644)
        if damage == "truncated":
            disk.write_bytes(b"")
        else:
            with open(disk, "r+b") as f:
                f.write(b"\xff" * 512)
        with rt.boxes.run("busybox") as box:
            assert box.info().template is None
            assert box.run(["echo", "ok"]).stdout == b"ok\n"
        assert templates.failures() == 1
        assert "qcow2" in (fresh_home / "templates" / key / "discarded").read_text()
        with rt.boxes.run("busybox") as box:  # and the next run makes a new template
            assert box.info().template not in (None, key)


def test_sigkill_of_the_cli_during_a_restore_leaves_nothing(home: Path) -> None:
    mb("image", "warm", "busybox")
    before = qemu_pids(home)
    p = spawn("run", "--rm", "busybox", "--", "sleep", "100")
    wait_for(lambda: qemu_pids(home) - before, 30, "the clone's VMM")
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not still_running(qemu_pids(home) - before, 10), "the clone outlived its owner"
    assert mb("gc").returncode == 0
    assert not list((home / "boxes").iterdir())
