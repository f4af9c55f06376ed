"""The QEMU command line of a box, as a pure function of its parameters.

Every socket QEMU serves is created by microbox beforehand and handed over as an
inherited, already-listening file descriptor (`fd=N`): clients can connect the
moment QEMU is spawned, the sockets have mode 0600 from birth, and there is no
wait for QEMU to create files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Kernel arguments: quiet console (the 8250 is slow under emulation), reset on
# panic and on reboot (QEMU runs with -no-reboot, so any reset ends the VM).
BASE_CMDLINE = (
    "console=ttyS0 quiet reboot=t panic=-1 rdinit=/init"
    " tsc=reliable no_timer_check random.trust_cpu=on mitigations=off"
)


@dataclass(frozen=True)
class VMConfig:
    qemu: str
    accel: str  # "kvm" or "tcg"
    cpus: int
    memory_mib: int
    kernel: Path
    initrd: Path
    disk: Path  # qcow2 overlay
    console_log: Path
    qmp_fd: int
    port_fds: tuple[int, ...]  # one listening socket per virtio-serial port
    extra_cmdline: str = ""


def qemu_argv(cfg: VMConfig) -> list[str]:
    """The exact argv that starts the box described by cfg."""
    if cfg.accel not in ("kvm", "tcg"):
        raise ValueError(f"accel must be kvm or tcg, not {cfg.accel!r}")
    cmdline = BASE_CMDLINE + (f" {cfg.extra_cmdline}" if cfg.extra_cmdline else "")
    accel = "kvm" if cfg.accel == "kvm" else "tcg"
    argv = [
        cfg.qemu,
        "-M", "microvm,acpi=off,x-option-roms=off,rtc=off,isa-serial=on",
        "-accel", accel,
        "-cpu", "host" if cfg.accel == "kvm" else "max",
        "-smp", str(cfg.cpus),
        "-m", f"{cfg.memory_mib}M",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-kernel", str(cfg.kernel),
        "-initrd", str(cfg.initrd),
        "-append", cmdline,
        "-chardev", f"file,id=console,path={cfg.console_log}",
        "-serial", "chardev:console",
        "-chardev", f"socket,id=qmp,fd={cfg.qmp_fd},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-drive", f"id=root,file={cfg.disk},format=qcow2,if=none,discard=unmap",
        "-device", "virtio-blk-device,drive=root",
        "-device", "virtio-rng-device",
        "-device", f"virtio-serial-device,max_ports={len(cfg.port_fds) + 1}",
    ]
    for n, fd in enumerate(cfg.port_fds):
        argv += [
            "-chardev", f"socket,id=port{n},fd={fd},server=on,wait=off",
            "-device", f"virtserialport,chardev=port{n},name=microbox.{n}",
        ]
    return argv
