"""Warm-start templates: a guest booted once to agent-ready and saved, so that
later boxes of the same kind restore from it instead of booting
(docs/snapshots.md).

    <home>/templates/<key>.<n>/
        mem         the guest's RAM (QEMU memory-backend-file; clones map it
                    copy-on-write, so idle clones share its pages)
        state       the migration stream of everything but RAM (tens of KB)
        disk.qcow2  the root disk as the saved guest knew it (read-only;
                    clones' overlays are backed by it)
        meta.json   what the key was made of

A template is written in `.tmp-*` and renamed into place, never edited or
moved after: running clones map its files, and clones' disks name its disk as
their backing file. One whose key no longer matches (new agent, kernel, image,
QEMU) is never used again and `gc` removes it once no box's disk is backed by
it. One that failed to restore gets a `discarded` file and is never used again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microbox import locks, paths
from microbox.core.boxdir import BoxDir
from microbox.errors import VMError
from microbox.spec import BoxSpec
from microbox.vmm import migration, process, qmp

FORMAT = 3  # bump when what a template holds, or the QEMU argv shape, changes
SAVE_TIMEOUT = 30.0
FAILURES = "restore-failures"  # one line per discarded template, read by doctor
DISCARDED = "discarded"  # in a template dir: never restore from it again
# A box dir names the template its disk is backed by in this file.
BOX_FILE = "template"


@dataclass(frozen=True)
class Template:
    path: Path

    @property
    def mem(self) -> Path:
        return self.path / "mem"

    @property
    def state(self) -> Path:
        return self.path / "state"

    @property
    def disk(self) -> Path:
        return self.path / "disk.qcow2"

    @property
    def meta(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / "meta.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


def _identity(path: Path) -> list[Any]:
    """A file's identity without reading it: builds replace artifacts by rename."""
    st = path.stat()
    return [str(path), st.st_ino, st.st_size, st.st_mtime_ns]


def key_parts(spec: BoxSpec, image_digest: str, qemu: str, kernel: Path, initrd: Path,
              accel: str, ports: int, folders: int = 0) -> dict[str, Any]:
    """Everything a restored guest depends on: change any and the template is not used."""
    return {"format": FORMAT, "image": image_digest, "qemu": _identity(Path(qemu)),
            "kernel": _identity(kernel), "initrd": _identity(initrd), "accel": accel,
            "cpus": spec.cpus, "memory_mib": spec.memory_mib, "ports": ports,
            "net": spec.net,  # the network device is in the saved device state
            **({"folders": folders} if folders else {})}  # 9p devices (core/boxmounts.py)


def key_of(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def find(key: str) -> Template | None:
    """The usable template of `key`, if one was made (and not discarded)."""
    for d in sorted(paths.templates_dir().glob(f"{key}.*")):
        if usable(d):
            return Template(d)
    return None


def usable(d: Path) -> bool:
    return (d / "meta.json").exists() and not (d / DISCARDED).exists()


def lock(key: str) -> contextlib.AbstractContextManager[locks.Lock]:
    """Serializes making the template `key` across processes."""
    root = paths.templates_dir()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return locks.held(root / f".{key}.lock")


def staging() -> tuple[BoxDir, locks.Lock]:
    """A fresh `.tmp-*` dir to boot a template in, with its lock held (gc skips it)."""
    d = BoxDir(paths.templates_dir() / f".tmp-{secrets.token_hex(6)}")
    d.path.mkdir(mode=0o700, parents=True)
    held = d.take_lock()
    assert held is not None  # the dir is new
    return d, held


def save(d: BoxDir, pid: int) -> None:
    """Stop the guest, write its device state (RAM stays in the shared file) and
    end the VMM: a template must never run again after it is saved."""
    with qmp.session(d.qmp, d.qmp_lock, SAVE_TIMEOUT) as mon:
        mon.execute("stop")
        migration.save(mon, d.path / "state", ignore_shared=True, what="saving the template",
                       timeout=SAVE_TIMEOUT)
        migration.quit(mon)
    if not process.wait_exit(pid, SAVE_TIMEOUT):
        process.kill_group(pid)
        raise VMError("the template's VMM did not exit after saving")


def publish(d: BoxDir, key: str, parts: dict[str, Any]) -> Template:
    """Freeze the saved files and rename the dir into place as template `key`."""
    for f in d.path.iterdir():
        if f.name not in ("mem", "state", "disk.qcow2", "console.log"):
            f.unlink(missing_ok=True)
    for name in ("mem", "state", "disk.qcow2"):
        os.chmod(d.path / name, 0o444)
    (d.path / "meta.json").write_text(json.dumps({**parts, "created_at": time.time()}))
    dest = paths.templates_dir() / f"{key}.{secrets.token_hex(4)}"
    os.rename(d.path, dest)  # under the key's lock
    return Template(dest)


def discard(t: Template, reason: str) -> None:
    """Never use `t` again; counted for doctor. It stays where it is: boxes made
    from it before keep their disks' backing file."""
    root = paths.templates_dir()
    with contextlib.suppress(OSError):
        (t.path / DISCARDED).write_text(reason[:300] + "\n")
    with contextlib.suppress(OSError), open(root / FAILURES, "a") as f:
        f.write(f"{time.time():.0f} {t.path.name} {reason[:300]}\n")


def failures() -> int:
    try:
        return len((paths.templates_dir() / FAILURES).read_text().splitlines())
    except OSError:
        return 0


SNAPSHOT = "snapshots/"  # how used_by names a snapshot: snapshots/<id>


def used_by(box: BoxDir) -> str | None:
    """What the box's disk is backed by besides its image, if anything:
    `templates/<key>` or `snapshots/<id>` (relative to the data dir)."""
    try:
        return (box.path / BOX_FILE).read_text().strip() or None
    except OSError:
        return None


def mark(box: BoxDir, t: Template | None) -> None:
    f = box.path / BOX_FILE
    if t is None:
        f.unlink(missing_ok=True)
    else:
        f.write_text(f"{t.path.parent.name}/{t.path.name}\n")


def current_names(image_digests: set[str], qemu: str | None, kernel: Path,
                  initrd: Path) -> set[str]:
    """Templates a new box could still restore from: their image is in the store
    and their QEMU, kernel and agent are the ones installed now."""
    root = paths.templates_dir()
    if not root.is_dir():
        return set()
    now: dict[str, Any] = {}
    for name, path in (("qemu", Path(qemu) if qemu else None), ("kernel", kernel),
                       ("initrd", initrd)):
        with contextlib.suppress(OSError):
            if path is not None:
                now[name] = _identity(path)
    names = set()
    for d in root.iterdir():
        meta = Template(d).meta
        if (not d.name.startswith(".") and usable(d) and meta.get("format") == FORMAT
                and meta.get("image") in image_digests
                and all(meta.get(k) == v for k, v in now.items()) and len(now) == 3):
            names.add(d.name)
    return names


def sweep(referenced: set[str], current: set[str], dry_run: bool) -> list[str]:
    """Remove template dirs that no box's disk uses and that are not current
    (stale keys, discarded ones, dead `.tmp-*` builds); returns their paths.
    `current` must not name discarded ones."""
    root = paths.templates_dir()
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for d in sorted(root.iterdir()):
        if not d.is_dir() or f"templates/{d.name}" in referenced or d.name in current:
            continue
        held = locks.try_acquire(d / "lock") if d.name.startswith(".tmp-") else None
        if d.name.startswith(".tmp-") and held is None:
            continue  # a template being made right now
        try:
            if not dry_run:
                shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
        finally:
            if held is not None:
                held.close()
    return removed
