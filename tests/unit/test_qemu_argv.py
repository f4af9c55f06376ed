"""The QEMU command line is a pure function: check it exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from microbox.vmm.qemu_argv import BASE_CMDLINE, VMConfig, kernel_cmdline, qemu_argv


def cfg(**kw: object) -> VMConfig:
    base: dict[str, object] = dict(
        qemu="/usr/bin/qemu-system-x86_64", accel="tcg", cpus=2, memory_mib=256,
        kernel=Path("/k/vmlinux"), initrd=Path("/a/initramfs.cpio"), disk=Path("/b/disk.qcow2"),
        console_log=Path("/b/console.log"), qmp_fd=5, port_fds=(6, 7), tsc_khz=2600000,
    )
    base.update(kw)
    return VMConfig(**base)  # type: ignore[arg-type]


def test_exact_tcg_command_line() -> None:
    assert qemu_argv(cfg()) == [
        "/usr/bin/qemu-system-x86_64",
        "-M", "microvm,acpi=off,x-option-roms=off,isa-serial=on",
        "-accel", "tcg",
        "-cpu", "max,erms=off,fsrm=off",
        "-smp", "2",
        "-m", "256M",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-kernel", "/k/vmlinux",
        "-initrd", "/a/initramfs.cpio",
        "-append", "console=ttyS0 quiet reboot=t panic=-1 tsc=reliable no_timer_check"
                   " tsc_early_khz=2600000 lpj=26000000 lapic_timer_period=10000000",
        "-chardev", "file,id=console,path=/b/console.log",
        "-serial", "chardev:console",
        "-chardev", "socket,id=qmp,fd=5,server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-drive", "id=root,file=/b/disk.qcow2,format=qcow2,if=none,discard=unmap",
        "-device", "virtio-blk-device,drive=root",
        "-device", "virtio-rng-device",
        "-device", "virtio-serial-device,max_ports=3",
        "-chardev", "socket,id=port0,fd=6,server=on,wait=off",
        "-device", "virtserialport,chardev=port0,name=microbox.0",
        "-chardev", "socket,id=port1,fd=7,server=on,wait=off",
        "-device", "virtserialport,chardev=port1,name=microbox.1",
    ]


def test_kvm_uses_host_cpu_and_no_tcg_tuning() -> None:
    argv = qemu_argv(cfg(accel="kvm", extra_cmdline="microbox.debug=1"))
    assert argv[argv.index("-accel") + 1] == "kvm"
    assert argv[argv.index("-cpu") + 1] == "host"
    assert argv[argv.index("-append") + 1] == BASE_CMDLINE + " microbox.debug=1"


def test_tcg_gives_the_kernel_the_tsc_and_apic_timer_rates() -> None:
    assert kernel_cmdline("tcg", 1, 2600000) == (
        BASE_CMDLINE + " tsc=reliable no_timer_check tsc_early_khz=2600000 lpj=26000000"
        " lapic_timer_period=10000000 noreplace-smp")
    assert kernel_cmdline("tcg", 2, None) == (
        BASE_CMDLINE + " tsc=reliable no_timer_check lapic_timer_period=10000000")


def test_unknown_accel_is_refused() -> None:
    with pytest.raises(ValueError):
        qemu_argv(cfg(accel="auto"))
