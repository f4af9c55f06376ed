"""Choosing the accelerator without ever hanging.

A host is in one of five KVM states, and `auto` uses KVM only in the first:

- works:  /dev/kvm opens and a probe guest boots under it;
- hangs:  /dev/kvm opens but the probe guest never gets anywhere (a nested
          hypervisor such as PVM that cannot run an unmodified guest);
- fails:  /dev/kvm opens but QEMU exits or aborts under it (an assertion in
          QEMU's KVM code, a refused ioctl, a missing CPU feature);
- denied: /dev/kvm exists but this user cannot open it;
- absent: there is no /dev/kvm (no virtualisation, or the module not loaded).

The probe boots the box kernel with no init: it panics at once, and with
panic=-1 under -no-reboot QEMU exits. It runs at most PROBE_TIMEOUT; its verdict
is cached per host kernel and QEMU binary. The device checks are cheap and never cached.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import pwd
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from microbox import paths
from microbox.vmm import process

PROBE_TIMEOUT = 4.0
KVM_DEVICE = "/dev/kvm"
STATES = ("works", "hangs", "fails", "denied", "absent")
_PROBED = ("works", "hangs", "fails")


@dataclass(frozen=True)
class Verdict:
    """What this host's KVM does; `detail` is the evidence."""

    state: str  # one of STATES
    detail: str

    @property
    def accel(self) -> str:
        return "kvm" if self.state == "works" else "tcg"

    def sentence(self) -> str:
        """One line naming the host's case."""
        return {
            "works": f"KVM works: {self.detail}",
            "hangs": f"KVM hangs: {self.detail}; boxes use TCG",
            "fails": f"KVM fails: QEMU cannot run a guest under {KVM_DEVICE} ({self.detail}); "
                     "boxes use TCG",
            "denied": f"KVM denied: {self.detail}; boxes use TCG",
            "absent": f"KVM absent: {self.detail}; boxes use TCG",
        }[self.state]

    def fix(self) -> str | None:
        """The command that gets KVM back, where one exists."""
        if self.state == "denied":
            user = _user_name()
            return f"add yourself to the kvm group: sudo usermod -aG kvm {user}, then log in again"
        if self.state == "absent":
            return ("enable virtualisation (VT-x/AMD-V) for this machine and load the module: "
                    "sudo modprobe kvm_intel (or kvm_amd)")
        return None


@dataclass(frozen=True)
class Choice:
    accel: str
    reason: str


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _host_key(qemu: str) -> str:
    """The host kernel and the QEMU binary: an upgrade of either probes again."""
    u = platform.uname()
    pvm = os.path.exists("/sys/module/kvm_pvm")
    try:
        st = os.stat(qemu)
        binary = f"{os.path.realpath(qemu)}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        binary = qemu
    raw = f"{u.release}|{u.version}|{u.machine}|pvm={pvm}|{binary}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def cache_file(qemu: str, cache_dir: Path | None = None) -> Path:
    return (cache_dir or paths.cache()) / "accel" / f"{_host_key(qemu)}.json"


def device_state(device: str | None = None) -> Verdict | None:
    """`absent` or `denied` if `device` cannot be opened read-write; None if it can.

    Opening is the only honest test: os.access says yes to root for any mode,
    and a node without its driver exists but fails with ENXIO/ENODEV.
    """
    device = device or KVM_DEVICE
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return Verdict("absent", f"{device} does not exist")
    except PermissionError:
        return Verdict("denied", f"{device} is not readable and writable by user {_user_name()}")
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return Verdict("absent", f"{device} cannot be opened ({name}: no KVM driver behind it)")
    os.close(fd)
    return None


def _probe_argv(qemu: str, kernel: Path) -> list[str]:
    return [qemu, "-M", "microvm,acpi=off,x-option-roms=off", "-accel", "kvm",
            "-cpu", "host", "-m", "128M", "-nodefaults", "-no-user-config", "-nographic",
            "-no-reboot", "-kernel", str(kernel), "-serial", "stdio",
            "-append", "console=ttyS0 panic=-1 reboot=t rdinit=/microbox-probe-no-init"]


def probe(qemu: str, kernel: Path, timeout: float = PROBE_TIMEOUT) -> Verdict:
    """Boot `kernel` under KVM with no init and see whether it gets to its panic.

    QEMU runs in its own process group, killed whole on timeout, so a hung
    guest (or anything QEMU started) never outlives the probe.
    """
    started = time.monotonic()
    proc = subprocess.Popen(_probe_argv(qemu, kernel), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return Verdict("hangs", f"a guest did not boot under {KVM_DEVICE} within {timeout:g} s "
                                "(a nested hypervisor such as PVM?)")
    except BaseException:
        _kill_group(proc)
        raise
    elapsed = time.monotonic() - started
    text = out.decode(errors="replace")
    if "Kernel panic" in text or "No working init" in text:
        return Verdict("works", f"a guest booted under {KVM_DEVICE} in {elapsed:.2f} s")
    return Verdict("fails", _failure(proc.returncode, err))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    process.kill_group(proc.pid)
    proc.communicate()


def _failure(code: int, stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    if code < 0:
        try:
            how = f"QEMU was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"QEMU was killed by signal {-code}"
    else:
        how = f"QEMU exited with status {code}"
    # QEMU's own message (an assertion, an ioctl error) is the useful part.
    return f"{how}: {lines[-1][:300]}" if lines else how


def cached_verdict(qemu: str, cache_dir: Path | None = None) -> Verdict | None:
    try:
        data = json.loads(cache_file(qemu, cache_dir).read_text())
        state, detail = str(data["state"]), str(data["detail"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Verdict(state, detail) if state in _PROBED else None


def _store(qemu: str, verdict: Verdict, cache_dir: Path | None) -> None:
    target = cache_file(qemu, cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"state": verdict.state, "detail": verdict.detail}))
    os.replace(tmp, target)


def assess(qemu: str, kernel: Path, *, device: str | None = None,
           cache_dir: Path | None = None, remember: bool = True) -> tuple[Verdict, bool]:
    """This host's KVM state and whether it came from the cache.

    A probe's verdict is written to the cache only when `remember` is set
    (`doctor` assesses without writing anything).
    """
    missing = device_state(device)
    if missing is not None:
        return missing, False
    cached = cached_verdict(qemu, cache_dir)
    if cached is not None:
        return cached, True
    verdict = probe(qemu, kernel)
    if remember:
        _store(qemu, verdict, cache_dir)
    return verdict, False


def choose(requested: str, qemu: str, kernel: Path, *, device: str | None = None,
           cache_dir: Path | None = None) -> Choice:
    if requested == "tcg":
        return Choice("tcg", "TCG requested with --accel tcg")
    if requested == "kvm":
        return Choice("kvm", "KVM requested with --accel kvm")
    verdict, cached = assess(qemu, kernel, device=device, cache_dir=cache_dir)
    return Choice(verdict.accel, verdict.sentence() + (" (cached)" if cached else ""))
