"""The QEMU command line of a box, as a pure function of its parameters.

Every socket QEMU serves is created by microbox beforehand and handed over as an
inherited, already-listening file descriptor (`fd=N`): clients can connect the
moment QEMU is spawned, the sockets have mode 0600 from birth, and there is no
wait for QEMU to create files.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

# Quiet console (the 8250 is slow under emulation); reset on panic and on
# reboot (QEMU runs with -no-reboot, so any reset ends the VM; reboot=t makes
# the reset immediate).
BASE_CMDLINE = "console=ttyS0 quiet reboot=t panic=-1"
RAM_ID = "mem0"  # the RAM block's name: a template's and its clones' must match
# Under TCG, `rep movsb` and `rep stosb` run one translated block per byte.
# Without ERMS and FSRM in CPUID the guest kernel copies and clears with
# `rep movsq`/`rep stosq` (8 bytes a block) and glibc with vector loops:
# a pipe in the guest went from 50-80 to 140-260 MB/s (bench/inside.py).
TCG_CPU = "max,erms=off,fsrm=off"


HZ = 100  # the guest kernel's tick (guest/kernel/microbox.config)
# QEMU's emulated local APIC counts the nanoseconds of its virtual clock: a
# 1 GHz bus. (The kernel's own calibration measured 9,999,988 a jiffy here.)
APIC_BUS_HZ = 1_000_000_000


def kernel_cmdline(accel: str, cpus: int, tsc_khz: int | None, extra: str = "") -> str:
    """Kernel arguments. Under TCG, skip calibrations that emulation makes slow and
    flaky (docs/kernel.md): the TSC rate comes from the host, and the local APIC
    timer's rate from QEMU's (our kernel's lapic_timer_period= patch). None of
    this applies to KVM.
    """
    args = [BASE_CMDLINE]
    if accel == "tcg":
        args.append("tsc=reliable no_timer_check")
        if tsc_khz:
            args.append(f"tsc_early_khz={tsc_khz} lpj={tsc_khz * 1000 // HZ}")
        args.append(f"lapic_timer_period={APIC_BUS_HZ // HZ}")
        if cpus == 1:
            args.append("noreplace-smp")
    if extra:
        args.append(extra)
    return " ".join(args)


@dataclass(frozen=True)
class UserNet:
    """QEMU's user-mode network, restricted: the guest reaches nothing through it
    but one forward, whose every connection QEMU hands to a new `command`
    process on its stdio (docs/net.md)."""

    network: str  # "10.0.2.0/24"
    host: str  # the stack's own address in it
    forward_addr: str
    forward_port: int
    command: tuple[str, ...]


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
    tsc_khz: int | None = None  # the host TSC rate, used under TCG
    extra_cmdline: str = ""
    # Guest RAM in a file (templates and their clones, docs/snapshots.md):
    # shared (a template writes its RAM there) or private (a clone maps the
    # template's RAM copy-on-write).
    memory_file: Path | None = None
    memory_shared: bool = False
    incoming: bool = False  # wait for a migration stream (QMP migrate-incoming)
    user_net: UserNet | None = None  # a virtio-net device on it; None: no network device
    tap_fd: int | None = None  # or a virtio-net device on this TAP (--net tap; inherited)
    shares: tuple[Share, ...] = ()  # host folders, as virtio-9p devices
    volumes: tuple[VolumeDisk, ...] = ()  # named volumes, as virtio-blk disks


@dataclass(frozen=True)
class Share:
    """A host folder exported to the box (virtio-9p, QEMU's `local` backend,
    which walks every path below `path` without following links out of it).
    `model` "mapped-xattr" (a root VMM): what the box makes is a plain file of
    root's on the host, its owner, mode, device or set-id bits an xattr of it,
    never a real device node or setuid file. "none" (a user's VMM): files are
    the user's, who can make no device nodes and no one else's set-id files.
    readonly=on: QEMU refuses every write."""

    tag: str  # the mount tag the agent mounts (HELLO mounts, "9p:TAG:...")
    path: Path
    read_only: bool
    model: str = "mapped-xattr"


@dataclass(frozen=True)
class VolumeDisk:
    """A named volume's ext4 disk; the agent finds it by its serial."""

    serial: str
    path: Path
    read_only: bool


# guest_announce=off: a restored guest does not send gratuitous ARP and
# unsolicited neighbour adverts, which serve a migration to another host's
# switch port. A box's network is new in every clone and learns the guest's
# address from its own first packet; the announce cost a clone about 1,000 of
# the 15,000 blocks TCG translates before the agent answers (docs/snapshots.md).
NET_DEVICE = "virtio-net-device,netdev=n0,guest_announce=off"


def qemu_argv(cfg: VMConfig) -> list[str]:
    """The exact argv that starts the box described by cfg."""
    if cfg.accel not in ("kvm", "tcg"):
        raise ValueError(f"accel must be kvm or tcg, not {cfg.accel!r}")
    cmdline = kernel_cmdline(cfg.accel, cfg.cpus, cfg.tsc_khz, cfg.extra_cmdline)
    machine = "microvm,acpi=off,x-option-roms=off,isa-serial=on"
    memory: list[str] = []
    if cfg.memory_file is not None:
        machine += f",memory-backend={RAM_ID}"
        share = "on" if cfg.memory_shared else "off"
        memory = ["-object", f"memory-backend-file,id={RAM_ID},size={cfg.memory_mib}M,"
                  f"mem-path={_escape(cfg.memory_file)},share={share}"]
    accel = cfg.accel
    argv = [
        cfg.qemu,
        "-M", machine,
        *memory,
        "-accel", accel,
        "-cpu", "host" if cfg.accel == "kvm" else TCG_CPU,
        "-smp", str(cfg.cpus),
        "-m", f"{cfg.memory_mib}M",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-kernel", str(cfg.kernel),
        "-initrd", str(cfg.initrd),
        "-append", cmdline,
        "-chardev", f"file,id=console,path={_escape(cfg.console_log)}",
        "-serial", "chardev:console",
        "-chardev", f"socket,id=qmp,fd={cfg.qmp_fd},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-drive", f"id=root,file={_escape(cfg.disk)},format=qcow2,if=none,discard=unmap",
        "-device", "virtio-blk-device,drive=root",
        "-device", "virtio-rng-device",
        "-device", f"virtio-serial-device,max_ports={len(cfg.port_fds) + 1}",
    ]
    for n, fd in enumerate(cfg.port_fds):
        argv += [
            "-chardev", f"socket,id=port{n},fd={fd},server=on,wait=off",
            "-device", f"virtserialport,chardev=port{n},name=microbox.{n}",
        ]
    if cfg.user_net is not None and cfg.tap_fd is not None:
        raise ValueError("a box has one network device: user_net or tap_fd, not both")
    if cfg.user_net is not None:
        argv += _user_net(cfg.user_net)
    if cfg.tap_fd is not None:  # the same device and id as user_net's: one device set
        argv += ["-netdev", f"tap,id=n0,fd={cfg.tap_fd},vhost=off", "-device", NET_DEVICE]
    for n, folder in enumerate(cfg.shares):
        argv += ["-fsdev", f"local,id=fs{n},path={_escape(folder.path)},"
                 f"security_model={folder.model},readonly={'on' if folder.read_only else 'off'}",
                 "-device", f"virtio-9p-device,fsdev=fs{n},mount_tag={folder.tag}"]
    for n, vol in enumerate(cfg.volumes):
        argv += ["-drive", f"id=vol{n},file={_escape(vol.path)},format=raw,if=none,"
                 f"readonly={'on' if vol.read_only else 'off'}",
                 "-device", f"virtio-blk-device,drive=vol{n},serial={vol.serial}"]
    if cfg.incoming:
        argv += ["-incoming", "defer"]
    return argv


def _user_net(n: UserNet) -> list[str]:
    """`restrict=on`: no packet leaves through the stack but the guestfwd's.
    QEMU splits the command with g_shell_parse_argv (so it is shell-quoted),
    after QemuOpts took its value (so a comma is written twice)."""
    command = " ".join(shlex.quote(a) for a in n.command).replace(",", ",,")
    netdev = (f"user,id=n0,net={n.network},host={n.host},restrict=on,ipv6=off,"
              f"guestfwd=tcp:{n.forward_addr}:{n.forward_port}-cmd:{command}")
    return ["-netdev", netdev, "-device", NET_DEVICE]


def _escape(path: Path) -> str:
    """A path as one QemuOpts value (a comma is written twice)."""
    return str(path).replace(",", ",,")
