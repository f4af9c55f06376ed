"""Choosing the accelerator without ever hanging.

`auto` uses KVM only after a probe showed that this host's KVM runs an
unmodified guest. The probe boots the box kernel with no init: it panics at
once, and with panic=-1 under -no-reboot QEMU exits. Where /dev/kvm belongs to
a hypervisor that cannot run a normal guest (a nested PVM host), the guest
hangs instead and the probe gives up after PROBE_TIMEOUT. The verdict is cached
per host kernel.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from microbox import paths

PROBE_TIMEOUT = 4.0


@dataclass(frozen=True)
class Choice:
    accel: str
    reason: str


def _host_key() -> str:
    u = platform.uname()
    pvm = os.path.exists("/sys/module/kvm_pvm")
    raw = f"{u.release}|{u.version}|{u.machine}|pvm={pvm}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def cache_file() -> Path:
    return paths.cache() / "accel" / f"{_host_key()}.json"


def kvm_usable_device() -> str | None:
    """None if /dev/kvm can be opened; else why not."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user"
    return None


def cached_verdict() -> Choice | None:
    try:
        data = json.loads(cache_file().read_text())
        return Choice(str(data["accel"]), str(data["reason"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def probe(qemu: str, kernel: Path, timeout: float = PROBE_TIMEOUT) -> Choice:
    """Boot `kernel` under KVM with no init and see whether it gets to its panic."""
    argv = [qemu, "-M", "microvm,acpi=off,x-option-roms=off", "-accel", "kvm",
            "-cpu", "host", "-m", "128M", "-nodefaults", "-no-user-config", "-nographic",
            "-no-reboot", "-kernel", str(kernel), "-serial", "stdio",
            "-append", "console=ttyS0 panic=-1 reboot=t rdinit=/microbox-probe-no-init"]
    started = time.monotonic()
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return Choice("tcg", f"KVM probe: a guest did not boot under /dev/kvm within "
                             f"{timeout:g} s (a nested hypervisor such as PVM?); using TCG")
    elapsed = time.monotonic() - started
    out = done.stdout.decode(errors="replace")
    if "Kernel panic" in out or "No working init" in out:
        return Choice("kvm", f"KVM probe: a guest booted under /dev/kvm in {elapsed:.2f} s")
    err = done.stderr.decode(errors="replace").strip().splitlines()
    detail = err[-1] if err else f"QEMU exited with {done.returncode}"
    return Choice("tcg", f"KVM probe failed ({detail}); using TCG")


def choose(requested: str, qemu: str, kernel: Path) -> Choice:
    if requested == "tcg":
        return Choice("tcg", "TCG requested with --accel tcg")
    if requested == "kvm":
        return Choice("kvm", "KVM requested with --accel kvm")
    missing = kvm_usable_device()
    if missing is not None:
        return Choice("tcg", f"{missing}; using TCG")
    cached = cached_verdict()
    if cached is not None:
        return Choice(cached.accel, cached.reason + " (cached)")
    verdict = probe(qemu, kernel)
    target = cache_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"accel": verdict.accel, "reason": verdict.reason}))
    os.replace(tmp, target)
    return verdict
