"""Booting the VM of a box: artifacts, sockets, QEMU, handshake; and ending it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from microbox import locks
from microbox.agent import ops
from microbox.agent.channel import Channel, Identity
from microbox.agent.protocol import untrusted_text
from microbox.artifacts import agent, kernel, vmm_libs
from microbox.artifacts import shim as shim_build
from microbox.core import boxmounts
from microbox.core.boxdir import PORTS, BoxDir
from microbox.core.log import Log, quiet
from microbox.errors import AgentError, AgentTimeout, HostError, VMError
from microbox.net import plan
from microbox.spec import BoxSpec
from microbox.vmm import accel, process, qcow2, spawn, tsc
from microbox.vmm.qemu_argv import UserNet, VMConfig, qemu_argv

BOOT_TIMEOUT = {"kvm": 15.0, "tcg": 60.0}

@dataclass(frozen=True)
class Artifacts:
    qemu: str
    kernel: Path
    initrd: Path
    shim: Path  # also the per-connection pipe of user-mode networking
    qemu_libs: Path | None  # first on QEMU's library path (artifacts/vmm_libs.py)


def default_kernel() -> Path:
    """$MICROBOX_KERNEL if set (a user's own vmlinux for every box), else the built one."""
    env = os.environ.get("MICROBOX_KERNEL")
    return Path(env) if env else kernel.kernel_path()


def artifacts(spec: BoxSpec) -> Artifacts:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise HostError("QEMU is not installed", "apt-get install -y qemu-system-x86")
    vmlinux = Path(spec.kernel) if spec.kernel else default_kernel()
    if not vmlinux.exists():
        raise HostError("no guest kernel has been built yet", "microbox kernel build")
    initrd = agent.initramfs_path()
    if not initrd.exists():
        raise HostError("the guest agent has not been built yet", "microbox agent build")
    shim = shim_build.binary_path()
    if spec.net != "none" and not shim.exists():
        raise HostError("the box shim has not been built yet", "microbox agent build")
    return Artifacts(qemu, vmlinux, initrd, shim, vmm_libs.library_dir(qemu))


def user_net(box: BoxDir, spec: BoxSpec, art: Artifacts) -> UserNet | None:
    """The box's user-mode network: its proxy address forwarded, connection by
    connection, to a pipe process that carries it to the box's shim."""
    if spec.net != "user":
        return None
    return UserNet(network=plan.NETWORK, host=plan.GATEWAY, forward_addr=plan.PROXY_ADDR,
                   forward_port=plan.PROXY_PORT,
                   command=(str(art.shim), "-pipe", str(box.proxy_sock)))


def create_disk(backing: Path, disk: Path, backing_format: str = "raw") -> None:
    """A qcow2 overlay backed by a read-only image (or a template's disk): O(1)
    in the backing file's size, written directly (vmm/qcow2.py)."""
    try:
        qcow2.create_overlay(backing, disk, backing_format)
    except (OSError, qcow2.Qcow2Error) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise VMError(f"cannot create the disk overlay {disk}: {detail}") from None


@dataclass
class Running:
    """A started VMM process."""

    pid: int
    pid_start: float | None
    accel: str
    proc: subprocess.Popen[bytes] | None = None
    ready_after: float = 0.0  # seconds from spawning QEMU to the agent's handshake
    spawned_at: float = 0.0  # time.monotonic() when QEMU was spawned
    # A pool's VMM (not our child) owned by this process: the write end of the
    # pipe whose end tells the box's shim to kill it (core/pool.py).
    owner_fd: int | None = None
    # ... and the box's owner.lock, held as long as this process owns the box.
    owner_lock: locks.Lock | None = None

    def kill(self) -> None:
        """SIGKILL the VMM's process group and reap it if it is our child (wait
        for it to exit if it is not)."""
        process.kill_group(self.pid)
        if self.proc is not None:
            self.proc.wait()
        else:
            process.wait_exit(self.pid, 10.0)
        self.disown()

    def disown(self) -> None:
        """Close this process's end of a pool's VMM's owner pipe, once the VMM
        was stopped or killed (its shim would kill it now if it still ran)."""
        if self.owner_fd is not None:
            os.close(self.owner_fd)
            self.owner_fd = None
        if self.owner_lock is not None:
            self.owner_lock.close()
            self.owner_lock = None


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [ln for ln in text.splitlines() if ln.strip()][-lines:]
    return untrusted_text(" | ".join(kept), 500)  # the console is written by the guest


@dataclass(frozen=True)
class Memory:
    """Guest RAM in a file: a template's (shared: QEMU writes it) or a clone's
    (private: the template's pages, copy-on-write)."""

    path: Path
    shared: bool


def launch(box: BoxDir, spec: BoxSpec, lock: locks.Lock, *, attached: bool, log: Log,
           memory: Memory | None = None, incoming: bool = False,
           art: Artifacts | None = None, choice: accel.Choice | None = None,
           inherit: tuple[int, ...] = (), tap_fd: int | None = None,
           folder_slots: int = 0) -> Running:
    """Spawn QEMU for `box`. `lock` (the held box lock) passes to QEMU and is
    closed here; the sockets are listening before QEMU starts. QEMU also
    inherits the fds in `inherit` (a migration stream to load, say) and, for a
    --net tap box, its TAP (`tap_fd`; the caller keeps and closes its copy).
    `folder_slots`: the 9p devices of a template and its clones (core/boxmounts.py)."""
    if spec.net == "tap" and tap_fd is None:
        raise VMError("a --net tap box needs its TAP device")
    socks: list[socket.socket] = []
    try:
        art = art or artifacts(spec)
        choice = choice or accel.choose(spec.accel, art.qemu, art.kernel)
        log(f"accelerator: {choice.accel} ({choice.reason})")
        shares, volumes = boxmounts.devices(spec, folder_slots)
        socks = [box.listen(box.qmp), *(box.listen(box.port(n)) for n in range(PORTS))]
        cfg = VMConfig(
            qemu=art.qemu, accel=choice.accel, cpus=spec.cpus, memory_mib=spec.memory_mib,
            kernel=art.kernel, initrd=art.initrd, disk=box.disk, console_log=box.console_log,
            qmp_fd=socks[0].fileno(), port_fds=tuple(s.fileno() for s in socks[1:]),
            tsc_khz=tsc.host_tsc_khz() if choice.accel == "tcg" else None,
            memory_file=memory.path if memory else None,
            memory_shared=memory.shared if memory else False, incoming=incoming,
            user_net=user_net(box, spec, art), tap_fd=tap_fd if spec.net == "tap" else None,
            extra_cmdline=plan.boot_parameter(spec.net),
            shares=shares, volumes=volumes,
        )
        argv = qemu_argv(cfg)
        log("qemu: " + " ".join(argv))
        if art.qemu_libs is not None:
            log(f"qemu: library path starts with {art.qemu_libs} (artifacts/vmm_libs.py)")
        started = time.monotonic()
        proc = spawn.spawn(argv, log=box.qemu_log, attached=attached, libs=art.qemu_libs,
                             pass_fds=[lock.fileno(), *(s.fileno() for s in socks), *inherit,
                                       *([tap_fd] if tap_fd is not None else [])])
    finally:
        for s in socks:
            s.close()
        lock.close()
    return Running(proc.pid, process.start_time(proc.pid), choice.accel, proc,
                   spawned_at=started)


def await_agent(box: BoxDir, vm: Running, identity: Identity | None, timeout: float,
                log: Log) -> Channel:
    """The handshaken session with the agent of a just-launched VMM (or a
    pool's, not our child); on any failure the VMM is killed before the error
    propagates."""
    proc = vm.proc
    pidfd = os.pidfd_open(vm.pid)
    try:
        channel = Channel.open(
            box.port, box.port_lock, PORTS, deadline=vm.spawned_at + timeout,
            identity=identity, abort_fd=pidfd,
            abort_reason=lambda: _died(box, proc) if proc else "the VM exited",
        )
    except AgentTimeout:
        vm.kill()
        raise VMError(f"the box did not become ready within {timeout:g} s "
                      f"(console: {_tail(box.console_log) or 'empty'})") from None
    except AgentError as exc:
        vm.kill()
        raise VMError(exc.message) from None
    except BaseException:
        vm.kill()
        raise
    finally:
        os.close(pidfd)
    vm.ready_after = time.monotonic() - vm.spawned_at
    log(f"agent ready after {vm.ready_after:.3f} s")
    return channel


def boot(box: BoxDir, spec: BoxSpec, lock: locks.Lock, *, attached: bool,
         identity: Identity | None, log: Log = quiet,
         memory: Memory | None = None, tap_fd: int | None = None) -> tuple[Running, Channel]:
    """Start QEMU for `box` and return once the agent answered the handshake."""
    vm = launch(box, spec, lock, attached=attached, log=log, memory=memory, tap_fd=tap_fd)
    return vm, await_agent(box, vm, identity, BOOT_TIMEOUT[vm.accel], log)


def _died(box: BoxDir, proc: subprocess.Popen[bytes]) -> str:
    code = proc.wait()
    detail = _tail(box.qemu_log) or _tail(box.console_log) or "no output"
    return f"the VM exited during boot with status {code} ({detail})"


def stop_gracefully(pid: int, channel: Channel | None, timeout: float) -> bool:
    """Ask the agent to sync and power off, then wait for the VMM to exit."""
    if channel is None:
        return False
    deadline = time.monotonic() + timeout
    try:
        ops.shutdown(channel, timeout=timeout)
    except AgentError:
        return False
    return process.wait_exit(pid, deadline - time.monotonic())


def terminate(pid: int, grace: float) -> None:
    """SIGTERM the VMM (QEMU exits cleanly on it), then SIGKILL its group."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not process.wait_exit(pid, grace):
        process.kill_group(pid)
        process.wait_exit(pid, grace)
