"""`doctor`: strictly read-only checks of everything microbox depends on.

Nothing here creates or writes anything: no database is created, no cache is
written. The one process it may start is the KVM probe (a QEMU that lives at
most a few seconds), when no verdict is cached, so that the accelerator line can
name which case the host is in.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from microbox import locks, paths, volumes
from microbox.artifacts import agent, kernel, vmm_libs
from microbox.core import orphans, templates
from microbox.core.boxdir import BoxDir, for_box
from microbox.core.vm import default_kernel
from microbox.errors import CorruptDatabase, DiskFull, HostError
from microbox.net import plan, tap
from microbox.spec import DEFAULT_MEMORY_MIB
from microbox.store import readonly
from microbox.store.migrations import MIGRATIONS
from microbox.store.status import LIVE, Status
from microbox.vmm import accel

MIN_QEMU = (7, 0)
MIN_FREE_BYTES = 1 << 30


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS, WARN, FAIL
    detail: str
    fix: str | None = None


def _qemu() -> Check:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return Check("qemu", "FAIL", "qemu-system-x86_64 is not installed",
                     "apt-get install -y qemu-system-x86")
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version (\d+)\.(\d+)", out)
    version = (int(m[1]), int(m[2])) if m else (0, 0)
    if version < MIN_QEMU:
        return Check("qemu", "FAIL", f"QEMU {version[0]}.{version[1]} is older than 7.0",
                     "apt-get install -y qemu-system-x86")
    if shutil.which("qemu-img") is None:
        return Check("qemu", "FAIL", "qemu-img is not installed", "apt-get install -y qemu-utils")
    return Check("qemu", "PASS", f"QEMU {version[0]}.{version[1]} at {qemu}")


def _qemu_libs() -> Check:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return Check("qemu libs", "PASS", "no QEMU (see the qemu line)")
    ok, detail = vmm_libs.status(qemu)
    return Check("qemu libs", "PASS" if ok else "WARN", detail,
                 None if ok else "apt-get install -y gcc")


def _host() -> Check:
    """The distribution, which decides the kernel source the Makefile installs."""
    codename, pretty = kernel.host_release()
    series = kernel.release_series().get(codename)
    if series is None:
        return Check("host", "WARN", f"{pretty or 'an unknown distribution'}: microbox is made "
                     f"and tested on Debian 12 and 13; the guest kernel builds from series "
                     f"{kernel.wanted_series() or '(none found)'}")
    return Check("host", "PASS", f"{pretty} (its kernel source: linux-source-{series})")


def _kernel() -> Check:
    if os.environ.get("MICROBOX_KERNEL"):
        path, origin = default_kernel(), "$MICROBOX_KERNEL"
    else:
        try:
            src = kernel.source()
            path, origin = kernel.kernel_path(), f"built from {src.package}"
        except kernel.KernelBuildError as exc:
            return Check("kernel", "FAIL", str(exc),
                         f"apt-get install -y linux-source-{kernel.wanted_series()}")
    if not path.exists():
        return Check("kernel", "FAIL", f"no guest kernel at {path} ({origin})",
                     "microbox kernel build")
    return Check("kernel", "PASS", f"{path} ({path.stat().st_size >> 20} MiB, {origin})")


def _agent() -> Check:
    path = agent.initramfs_path()
    if not path.exists():
        return Check("agent", "FAIL", f"no agent initramfs at {path}", "microbox agent build")
    return Check("agent", "PASS", str(path))


def _accel() -> Check:
    """Names the host's KVM case (works, hangs, fails, denied, absent) in one line.

    With /dev/kvm usable and no cached verdict this runs the probe (a QEMU of
    at most accel.PROBE_TIMEOUT seconds that touches no file) and caches nothing.
    """
    missing = accel.device_state()
    if missing is not None:
        return Check("accelerator", "WARN", missing.sentence(), missing.fix())
    qemu = shutil.which("qemu-system-x86_64")
    try:
        kernel_path = default_kernel()
    except kernel.KernelBuildError:
        kernel_path = None
    if qemu is None or kernel_path is None or not kernel_path.exists():
        return Check("accelerator", "WARN", f"{accel.KVM_DEVICE} opens, but it cannot be probed "
                     "before QEMU and the guest kernel are installed; boxes use TCG until then")
    verdict, cached = accel.assess(qemu, kernel_path, remember=False)
    status = "PASS" if verdict.state == "works" else "WARN"
    return Check("accelerator", status, verdict.sentence() + (" (cached)" if cached else ""),
                 verdict.fix())


def _data_dir() -> Check:
    home = paths.home()
    if not home.exists():
        return Check("data dir", "PASS", f"{home} does not exist yet; it will be created")
    st = home.stat()
    if st.st_uid != os.getuid():
        return Check("data dir", "FAIL", f"{home} belongs to uid {st.st_uid}, not you",
                     f"chown -R {os.getuid()} {home}")
    if stat.S_IMODE(st.st_mode) & 0o077:
        return Check("data dir", "FAIL", f"{home} has mode {stat.S_IMODE(st.st_mode):o}; "
                     "other users could reach box sockets", f"chmod 700 {home}")
    return Check("data dir", "PASS", f"{home} (mode 700, yours)")


def _database() -> Check:
    path = paths.database()
    if not path.exists():
        return Check("database", "PASS", f"{path} does not exist yet; it will be created")
    try:
        ok, version = readonly.health(path)
    except HostError as err:  # store.db.database_error: full, corrupt or neither
        if isinstance(err, CorruptDatabase):
            return Check("database", "FAIL", err.message, f"mv {path} {path}.corrupt")
        if isinstance(err, DiskFull):
            return Check("database", "FAIL", f"{path} cannot be opened: {err.message} "
                         "(microbox gc frees space too)", err.recovery)
        return Check("database", "FAIL", err.message)
    if ok != "ok":
        return Check("database", "FAIL", f"{path} failed its integrity check: {ok}",
                     f"mv {path} {path}.corrupt")
    if version > len(MIGRATIONS):
        return Check("database", "FAIL", f"{path} has schema {version}, newer than this "
                     f"microbox ({len(MIGRATIONS)})", "pip install --upgrade microbox")
    return Check("database", "PASS", f"{path} (schema {version})")


def _disk() -> Check:
    target = paths.home()
    while not target.exists():
        target = target.parent
    free = shutil.disk_usage(target).free
    if free < MIN_FREE_BYTES:
        return Check("disk", "FAIL", f"only {free >> 20} MiB free under {target} "
                     "(microbox gc frees space too)", DiskFull.RECOVERY)
    return Check("disk", "PASS", f"{free >> 30} GiB free under {target}")


# A check that needs the boxes' rows says so, and leaves the fix to the database line.
NOT_CHECKED = "not checked: the database cannot be read (its line above says why)"


def _rows() -> list[tuple[str, str, str]] | None:
    """(id, name, status) of every box, read-only; None if the database cannot be read."""
    path = paths.database()
    if not path.exists():
        return []
    try:
        return readonly.box_summaries(path)
    except HostError:
        return None


def _crashed() -> Check:
    rows = _rows()
    if rows is None:
        return Check("boxes", "WARN", NOT_CHECKED)
    dead = [name for box_id, name, status in rows
            if status in LIVE and not for_box(box_id).alive()]
    dead += [name for _, name, status in rows if status == Status.ERROR]
    if dead:
        return Check("boxes", "WARN", f"{len(dead)} box(es) crashed (VMM gone): "
                     + ", ".join(sorted(dead)), f"microbox delete {sorted(dead)[0]}")
    return Check("boxes", "PASS", f"{len(rows)} boxes, none crashed")


def _orphans() -> Check:
    rows = _rows()
    vmms = orphans.scan()
    if rows is None:
        # A VMM whose box cannot be looked up is not known to be an orphan: it
        # may be a healthy box, so no kill is ever advised from here.
        return Check("orphans", "WARN", f"{len(vmms)} VMM process(es) and the box dirs "
                     + NOT_CHECKED)
    known = {r[0] for r in rows}
    lost = [v for v in vmms if v.box_id not in known]
    if lost:
        return Check("orphans", "FAIL", f"{len(lost)} VMM processes belong to no box: "
                     + " ".join(f"{v.box_id[:12]} (pid {v.pid})" for v in lost),
                     f"microbox kill {lost[0].box_id[:12]}")
    root = paths.boxes_dir()
    # A dir whose lock is held is a box being made or booted; only unowned ones are stray.
    stray = [d for d in root.iterdir() if d.is_dir() and d.name not in known
             and not BoxDir(d).alive()] if root.is_dir() else []
    if stray:
        return Check("orphans", "FAIL", f"{len(stray)} box dirs belong to no box",
                     "microbox gc")
    shims = orphans.stray_shims()
    if shims:
        return Check("orphans", "FAIL", f"{len(shims)} box shims outlived their VM: pid "
                     + " ".join(str(s.pid) for s in shims), "microbox gc")
    return Check("orphans", "PASS", f"{len(vmms)} VMM processes, all known; no stray dirs "
                 "or shims")


def _networks() -> Check:
    """--net tap namespaces, links and nftables chains that no live box owns
    (of any data dir on this host: they are the kernel's, and shared)."""
    if os.geteuid() != 0 or not tap.HOST_LOCK.exists():  # never made a box network
        found = tap.strays()
    else:
        with tap.host_lock():  # no start or stop is half way
            found = tap.strays()
    if found:
        return Check("network", "FAIL", f"{len(found)} box network piece(s) outlived their "
                     "box: " + ", ".join(str(s) for s in found[:4]), "microbox gc (as root)")
    return Check("network", "PASS", "no stray box namespaces, links or nftables chains")


def _templates() -> Check:
    root = paths.templates_dir()
    ready = [d for d in root.iterdir() if not d.name.startswith(".") and templates.usable(d)] \
        if root.is_dir() else []
    failed = templates.failures()
    text = f"{len(ready)} warm-start template(s)"
    if failed:
        return Check("templates", "WARN", f"{text}; {failed} restore(s) failed and booted cold "
                     f"(see {root / templates.FAILURES})", "microbox gc")
    return Check("templates", "PASS", f"{text}; no restore failed")


def _pools() -> Check:
    """Pools short of boxes with no filler at work: their fills fail (the
    pool's log says why), or their VMMs died since."""
    path = paths.database()
    try:
        found = readonly.pool_summaries(path) if path.exists() else []
    except HostError:
        return Check("pools", "WARN", NOT_CHECKED)
    short = []
    for pool_id, shape, size, spare_ids in found:
        ready = sum(1 for box_id in spare_ids if for_box(box_id).alive())
        if ready < size and not locks.is_held(paths.pools_dir() / f"{pool_id}.lock"):
            short.append((pool_id, shape, size, ready))
    if not short:
        return Check("pools", "PASS", f"{len(found)} pool(s), each full or filling")
    pool_id, shape, size, ready = short[0]
    log = paths.pools_dir() / f"{pool_id}.log"
    flags = "".join(f" --{k.removesuffix('_mib')} {shape[k]}" for k, default in
                    (("cpus", 1), ("memory_mib", DEFAULT_MEMORY_MIB), ("net", plan.DEFAULT_MODE),
                     ("accel", "auto")) if shape.get(k, default) != default)
    return Check("pools", "WARN", f"pool {pool_id} has {ready} of {size} boxes ready and none "
                 f"coming ({len(short)} pool(s) short; the fillers' log: {log})",
                 f"microbox pool add {shape.get('image')} -n {size}{flags}")


def _volumes() -> Check:
    """Named volumes, and the work of volume creates that were killed."""
    found = volumes.all_volumes()
    left = volumes.sweep_abandoned(dry_run=True)
    used = sum(v.used_bytes for v in found)
    if left:
        return Check("volumes", "WARN", f"{len(left)} killed volume create(s) left their "
                     "work", "microbox gc")
    return Check("volumes", "PASS", f"{len(found)} volume(s), {used >> 20} MiB of disk")


CHECKS: tuple[Callable[[], Check], ...] = (_host, _qemu, _qemu_libs, _kernel, _agent, _accel,
                                           _data_dir, _database, _disk, _crashed, _orphans,
                                           _networks, _templates, _pools, _volumes)


def run_checks() -> list[Check]:
    return [check() for check in CHECKS]


