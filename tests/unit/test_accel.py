"""The accelerator decision on every kind of host, without depending on this one.

A fake `qemu-system-x86_64` (a shell script) stands in for QEMU under KVM and
boots, hangs, aborts or refuses; a scratch file stands in for /dev/kvm. The
real QEMU path is covered by tests/vm/test_run.py, which asserts only what holds
on every host.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from microbox.core import doctor
from microbox.vmm import accel

# Every fake refuses to act as a probe unless it was asked for KVM.
PRELUDE = """#!/bin/sh
export MB_FAKE_QEMU="$0"
echo "$@" >> "$(dirname "$0")/calls"
case " $* " in *" -accel kvm "*) ;; *) echo "not a KVM probe: $*" >&2; exit 99;; esac
"""
FAKES = {
    "boots": 'echo "Kernel panic - not syncing: No working init found."\nexit 0\n',
    "hangs": "sleep 60 &\nexec sleep 60\n",
    "aborts": ('echo "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: '
               'Assertion \\`ret == cpu->kvm_msr_buf->nmsrs\' failed." >&2\nkill -ABRT $$\n'),
    "refuses": ('echo "Could not access KVM kernel module: Permission denied" >&2\n'
                'echo "qemu-system-x86_64: failed to initialize kvm: Permission denied" >&2\n'
                "exit 1\n"),
}


def fake_qemu(tmp: Path, behaviour: str) -> str:
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    path = bindir / "qemu-system-x86_64"
    path.write_text(PRELUDE + FAKES[behaviour])
    path.chmod(0o755)
    return str(path)


def calls(qemu: str) -> int:
    log = Path(qemu).parent / "calls"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture
def device(tmp_path: Path) -> str:
    """A node that opens read-write, as a usable /dev/kvm does."""
    dev = tmp_path / "kvm"
    dev.write_bytes(b"")
    return str(dev)


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    k = tmp_path / "vmlinux"
    k.write_bytes(b"\x7fELF")
    return k


def test_works_chooses_kvm_and_caches_the_verdict(tmp_path: Path, device: str,
                                                   kernel: Path) -> None:
    qemu = fake_qemu(tmp_path, "boots")
    first = accel.choose("auto", qemu, kernel, device=device, cache_dir=tmp_path / "c")
    assert first.accel == "kvm" and first.reason.startswith("KVM works: a guest booted")
    again = accel.choose("auto", qemu, kernel, device=device, cache_dir=tmp_path / "c")
    assert again.accel == "kvm" and again.reason.endswith("(cached)")
    assert calls(qemu) == 1


def test_hang_falls_back_to_tcg_within_5_seconds_and_leaves_no_process(
        tmp_path: Path, device: str, kernel: Path) -> None:
    qemu = fake_qemu(tmp_path, "hangs")
    started = time.monotonic()
    choice = accel.choose("auto", qemu, kernel, device=device, cache_dir=tmp_path / "c")
    assert time.monotonic() - started < 5
    assert choice.accel == "tcg" and choice.reason.startswith("KVM hangs: a guest did not boot")
    assert _live_sleepers(qemu) == [], "the probe left part of the hung QEMU behind"
    again = accel.choose("auto", qemu, kernel, device=device, cache_dir=tmp_path / "c")
    assert again.accel == "tcg" and again.reason.endswith("(cached)") and calls(qemu) == 1


def _live_sleepers(qemu: str) -> list[int]:
    """Processes this fake started that are still alive; a zombie is dead."""
    mine = []
    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and \
                    p.environ().get("MB_FAKE_QEMU") == qemu:
                mine.append(p.pid)
        except psutil.Error:
            continue
    return mine


@pytest.mark.parametrize("behaviour,evidence", [
    ("aborts", ["killed by SIGABRT", "Assertion"]),
    ("refuses", ["exited with status 1", "failed to initialize kvm"]),
])
def test_qemu_failing_under_kvm_falls_back_to_tcg_with_its_message(
        tmp_path: Path, device: str, kernel: Path, behaviour: str, evidence: list[str]) -> None:
    qemu = fake_qemu(tmp_path, behaviour)
    choice = accel.choose("auto", qemu, kernel, device=device, cache_dir=tmp_path / "c")
    assert choice.accel == "tcg" and choice.reason.startswith("KVM fails: QEMU cannot run")
    for text in evidence:
        assert text in choice.reason


def test_absent_device_never_runs_qemu(tmp_path: Path, kernel: Path) -> None:
    qemu = fake_qemu(tmp_path, "boots")
    choice = accel.choose("auto", qemu, kernel, device=str(tmp_path / "none"),
                          cache_dir=tmp_path / "c")
    assert choice.accel == "tcg" and choice.reason.startswith("KVM absent:")
    assert calls(qemu) == 0 and not (tmp_path / "c").exists()


def test_a_node_without_a_driver_is_absent(tmp_path: Path) -> None:
    node = tmp_path / "kvm"
    try:  # char major 240 is reserved for local use: no driver answers it
        os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(240, 0))
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")
    verdict = accel.device_state(str(node))
    assert verdict is not None and verdict.state == "absent" and "ENXIO" in verdict.detail


def test_unreadable_device_is_denied_with_the_group_fix() -> None:
    verdict = _device_state_unprivileged()
    assert verdict is not None and verdict.state == "denied"
    assert "not readable and writable by user" in verdict.detail
    fix = verdict.fix()
    assert fix is not None and "usermod -aG kvm" in fix


def _device_state_unprivileged() -> accel.Verdict | None:
    """device_state of a 0600 file owned by someone else (root's view is not a user's)."""
    d = Path(tempfile.mkdtemp(prefix="mbkvm-", dir="/tmp"))
    try:
        d.chmod(0o755)
        dev = d / "kvm"
        dev.write_bytes(b"")
        dev.chmod(0o600 if os.getuid() == 0 else 0)
        if os.getuid() != 0:
            return accel.device_state(str(dev))
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child drops to nobody and reports what it saw
            try:
                os.close(r)
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                v = accel.device_state(str(dev))
                os.write(w, f"{v.state}\n{v.detail}".encode() if v else b"")
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read().decode()
        os.waitpid(pid, 0)
        if not data:
            return None
        state, detail = data.split("\n", 1)
        return accel.Verdict(state, detail)
    finally:
        shutil.rmtree(d)


def test_a_new_qemu_binary_is_probed_again(tmp_path: Path, device: str, kernel: Path) -> None:
    cache = tmp_path / "c"
    qemu = fake_qemu(tmp_path, "aborts")
    assert accel.choose("auto", qemu, kernel, device=device, cache_dir=cache).accel == "tcg"
    qemu = fake_qemu(tmp_path, "boots")  # the upgrade fixed KVM
    os.utime(qemu, ns=(1, 1))
    assert accel.choose("auto", qemu, kernel, device=device, cache_dir=cache).accel == "kvm"
    assert calls(qemu) == 2


def test_explicit_choice_runs_no_probe(tmp_path: Path, device: str, kernel: Path) -> None:
    qemu = fake_qemu(tmp_path, "hangs")
    assert accel.choose("tcg", qemu, kernel, device=device).accel == "tcg"
    assert accel.choose("kvm", qemu, kernel, device=device).accel == "kvm"
    assert calls(qemu) == 0


def test_an_old_cache_entry_is_probed_again(tmp_path: Path, device: str, kernel: Path) -> None:
    qemu = fake_qemu(tmp_path, "aborts")
    cache = accel.cache_file(qemu, tmp_path / "c")
    cache.parent.mkdir(parents=True)
    cache.write_text('{"accel": "kvm", "reason": "from an older microbox"}')
    choice = accel.choose("auto", qemu, kernel, device=device, cache_dir=tmp_path / "c")
    assert choice.accel == "tcg"
    assert calls(qemu) == 1


# --- doctor names the case in one line -------------------------------------------------


@pytest.fixture
def doctor_host(tmp_path: Path, kernel: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("MICROBOX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MICROBOX_KERNEL", str(kernel))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    yield tmp_path


@pytest.mark.parametrize("behaviour,status,start", [
    ("boots", "PASS", "KVM works:"),
    ("hangs", "WARN", "KVM hangs:"),
    ("aborts", "WARN", "KVM fails:"),
])
def test_doctor_names_the_probed_case_and_writes_nothing(
        doctor_host: Path, device: str, monkeypatch: pytest.MonkeyPatch,
        behaviour: str, status: str, start: str) -> None:
    fake_qemu(doctor_host, behaviour)
    monkeypatch.setattr(accel, "KVM_DEVICE", device)
    check = doctor._accel()
    assert (check.status, check.fix) == (status, None)
    assert check.detail.startswith(start) and "\n" not in check.detail
    assert not (doctor_host / "cache").exists()


def test_doctor_names_an_absent_device_and_its_fix(
        doctor_host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_qemu(doctor_host, "boots")
    monkeypatch.setattr(accel, "KVM_DEVICE", str(doctor_host / "none"))
    check = doctor._accel()
    assert check.status == "WARN" and check.detail.startswith("KVM absent:")
    assert check.fix is not None and "modprobe" in check.fix
