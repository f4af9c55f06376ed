"""The host's TSC frequency, for the guest kernel under TCG.

Under TCG the guest reads the host's TSC. Telling the kernel its frequency
(`tsc_early_khz=`, `lpj=`) skips a calibration that costs boot time and, under
emulation, fails in about one boot in four (the clock then falls back to
10 ms jiffies). /proc/cpuinfo's "cpu MHz" is the current core clock on hosts
with frequency scaling, not the TSC rate, so the TSC is measured against
CLOCK_MONOTONIC_RAW instead, once per host boot, and cached.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from microbox import paths

# rdtsc; shl rdx, 32; or rax, rdx; ret
_RDTSC = bytes([0x0F, 0x31, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0, 0xC3])
WINDOW = 0.02


def _sample(rdtsc: Callable[[], int]) -> tuple[int, int]:
    """(monotonic-raw ns, tsc) from the tightest of 20 bracketed reads."""
    best = (1 << 62, 0, 0)
    for _ in range(20):
        a = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
        c = rdtsc()
        b = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
        if b - a < best[0]:
            best = (b - a, (a + b) // 2, c)
    return best[1], best[2]


def measure() -> int | None:
    """The TSC rate in kHz, or None where it cannot be read (not x86, no exec pages)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        buf = mmap.mmap(-1, mmap.PAGESIZE,
                        prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except OSError:
        return None
    try:
        buf.write(_RDTSC)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        rdtsc = ctypes.CFUNCTYPE(ctypes.c_uint64)(addr)
        t0, c0 = _sample(rdtsc)
        time.sleep(WINDOW)
        t1, c1 = _sample(rdtsc)
        del rdtsc
    finally:
        with contextlib.suppress(BufferError):  # a ctypes view may still point into it
            buf.close()
    khz = (c1 - c0) * 1_000_000 // max(1, t1 - t0)
    return khz if khz > 100_000 else None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def host_tsc_khz() -> int | None:
    """Cached per host boot: the TSC rate does not change while the host runs."""
    cache = paths.cache() / "host" / f"tsc-{_boot_id()}.json"
    try:
        value = json.loads(cache.read_text())["khz"]
        return int(value) if value else None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    khz = measure()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"khz": khz}))
    os.replace(tmp, cache)
    return khz
