"""Starting a box: restored from its template when one fits, booted otherwise.

The first start of a box (its disk still pristine) restores from the template
of its (image, kernel, agent, QEMU, accelerator, shape), making that template
first if there is none. A restore that fails discards the template and the box
boots cold; later starts always boot from the box's own disk.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import time
from dataclasses import replace
from pathlib import Path

from microbox import locks
from microbox.agent import ops
from microbox.agent.channel import Channel, Identity
from microbox.agent.protocol import Capability
from microbox.core import boxmounts, templates, vm
from microbox.core.boxdir import PORTS, BoxDir
from microbox.core.log import Log
from microbox.core.templates import Template
from microbox.errors import MicroboxError, VMError
from microbox.net import plan, tap
from microbox.spec import BoxSpec
from microbox.vmm import accel, migration, qmp

RESTORE_TIMEOUT = {"kvm": 5.0, "tcg": 10.0}
LINK_SETTLE = 3.0  # s


def start(box: BoxDir, spec: BoxSpec, image: Path, image_digest: str, lock: locks.Lock, *,
          attached: bool, identity: Identity, log: Log,
          tap_fd: int | None = None) -> tuple[vm.Running, Channel]:
    """Restore the box from its template (made now if missing), or boot it cold
    if the restore fails. `lock` is the held box lock; it passes to the VMM."""
    try:
        art = vm.artifacts(spec)
        choice = accel.choose(spec.accel, art.qemu, art.kernel)
        t = prepare(spec, image, image_digest, art, choice, log)
    except BaseException:
        lock.close()  # the VMM that was to inherit it never started
        raise
    held: locks.Lock | None = lock
    try:
        vm.create_disk(t.disk, box.disk, "qcow2")  # reads the template disk's header
        templates.mark(box, t)
        held = None  # from here the restore owns it (it closes it on failure)
        return restore(box, spec, t, lock, art, choice, attached=attached,
                       identity=identity, log=log, tap_fd=tap_fd)
    except VMError as exc:
        templates.discard(t, exc.message)
        log(f"warm start failed, booting cold: {exc.message}")
    except BaseException:
        if held is not None:
            held.close()
        raise
    again = held or box.take_lock()  # still ours, or the VMM that held it is dead
    if again is None:
        raise VMError("the box is held by another process after a failed restore")
    vm.create_disk(image, box.disk)
    templates.mark(box, None)
    return vm.boot(box, spec, again, attached=attached, identity=identity, log=log,
                   tap_fd=tap_fd)


def restore_snapshot(box: BoxDir, spec: BoxSpec, t: Template, lock: locks.Lock, *,
                     attached: bool, identity: Identity, log: Log,
                     tap_fd: int | None = None) -> tuple[vm.Running, Channel]:
    """A box's first start from a snapshot: no cold fallback (its disk is the
    snapshot's); a snapshot that cannot be restored fails the start."""
    try:
        art = vm.artifacts(spec)
        choice = accel.choose(spec.accel, art.qemu, art.kernel)
        vm.create_disk(t.disk, box.disk, "qcow2")
    except BaseException:
        lock.close()
        raise
    try:
        return restore(box, spec, t, lock, art, choice, attached=attached,
                       identity=identity, log=log, tap_fd=tap_fd)
    except VMError as exc:
        raise VMError(f"the snapshot cannot be restored: {exc.message}") from None


def prepare(spec: BoxSpec, image: Path, image_digest: str, art: vm.Artifacts,
            choice: accel.Choice, log: Log) -> Template:
    """The template boxes of this spec restore from (made now if missing)."""
    parts = _key_parts(spec, image_digest, art, choice)
    return make(templates.key_of(parts), parts, spec, image, art, choice, log)


def template_key(spec: BoxSpec, image_digest: str) -> tuple[str, str]:
    """The key of the template boxes of this spec restore from, and their accelerator."""
    art = vm.artifacts(spec)
    choice = accel.choose(spec.accel, art.qemu, art.kernel)
    return templates.key_of(_key_parts(spec, image_digest, art, choice)), choice.accel


def _key_parts(spec: BoxSpec, image_digest: str, art: vm.Artifacts,
               choice: accel.Choice) -> dict[str, object]:
    return templates.key_parts(spec, image_digest, art.qemu, art.kernel, art.initrd,
                               choice.accel, PORTS, boxmounts.slots_for(spec))


def warm_image(spec: BoxSpec, image: Path, image_digest: str, log: Log) -> Template:
    """`image warm`: make the template of `spec` ahead of the first box."""
    art = vm.artifacts(spec)
    return prepare(spec, image, image_digest, art,
                   accel.choose(spec.accel, art.qemu, art.kernel), log)


def make(key: str, parts: dict[str, object], spec: BoxSpec, image: Path, art: vm.Artifacts,
         choice: accel.Choice, log: Log) -> Template:
    """The template `key`, booted and saved now if it does not exist yet (once
    across processes: others wait for it and use it)."""
    with templates.lock(key):
        found = templates.find(key)
        if found is not None:
            return found
        log(f"making warm-start template {key}")
        d, held = templates.staging()
        try:
            vm.create_disk(image, d.disk)
            with tap.scratch(spec.net) as tap_fd:
                # the template mounts nothing: its 9p devices export a placeholder
                running = vm.launch(d, replace(spec, mounts=()), held, attached=True, log=log,
                                    art=art, choice=choice,
                                    memory=vm.Memory(d.path / "mem", shared=True),
                                    tap_fd=tap_fd, folder_slots=boxmounts.slots_for(spec))
            # An identity of its own leaves a machine-id file of the right
            # length in the template's disk, which clones overwrite in place.
            own = Identity("microbox-template", secrets.token_hex(16))
            channel = vm.await_agent(d, running, own, vm.BOOT_TIMEOUT[running.accel], log)
            warm_up(channel)
            _settle_link(channel)
            channel.close()  # clones start with no session: the agent waits for a host
            try:
                templates.save(d, running.pid)
            finally:
                running.kill()
            return templates.publish(d, key, parts)
        except BaseException:
            held.close()  # launched or not (close is idempotent)
            shutil.rmtree(d.path, ignore_errors=True)
            raise


def warm_up(channel: Channel) -> None:
    """Run one short command: before saving a template, so every clone starts
    with the exec path (the image's shell and libc) already in the guest's page
    cache; in a pool's spare, so that TCG has translated it too."""
    req = ops.ExecRequest(argv=["sh", "-c", "true"], cwd="/", timeout=10.0)
    try:
        stream, _ = ops.start_exec(channel, req)
        try:
            while not isinstance(ops.next_event(stream), ops.ExitStatus):
                pass
        finally:
            stream.close()
    except MicroboxError:
        pass  # an image without a shell: clones read it from disk, no harm done


def _settle_link(channel: Channel) -> None:
    """Wait, up to LINK_SETTLE, until the guest's kernel has taken the box's
    link up. It does that in deferred work, rate-limited to once a second, so
    up to a second after boot; a template saved before that left the work
    (routes, notifications) to every clone. A cold boot does not wait for it.
    A box without a network has no such file: the first read ends the wait."""
    deadline = time.monotonic() + LINK_SETTLE
    while time.monotonic() < deadline:
        state = io.BytesIO()
        try:
            ops.get_file(channel, f"/sys/class/net/{plan.IFACE}/operstate", state, 64)
        except MicroboxError:
            return
        if state.getvalue().strip() == b"up":
            return
        time.sleep(0.01)  # a guest condition with no event to wait on


def restore(box: BoxDir, spec: BoxSpec, t: Template, lock: locks.Lock, art: vm.Artifacts,
            choice: accel.Choice, *, attached: bool, identity: Identity,
            log: Log, tap_fd: int | None = None) -> tuple[vm.Running, Channel]:
    """A VMM on the template's RAM (copy-on-write) loading its device state; the
    guest goes on from agent-ready and takes the box's identity in the handshake."""
    try:
        state = os.open(t.state, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        lock.close()
        raise VMError(f"cannot read {t.state}: {exc.strerror}") from None
    try:
        running = vm.launch(box, spec, lock, attached=attached, log=log, art=art,
                            choice=choice, memory=vm.Memory(t.mem, shared=False),
                            incoming=True, inherit=(state,), tap_fd=tap_fd,
                            folder_slots=boxmounts.slots_for(spec))
        try:
            with qmp.session(box.qmp, box.qmp_lock) as mon:
                migration.load(mon, state, ignore_shared=True, what="loading the template",
                               timeout=RESTORE_TIMEOUT[running.accel])
                mon.execute("cont")  # the stream says the guest was stopped
        except BaseException:
            running.kill()
            raise
    finally:
        os.close(state)
    channel = vm.await_agent(box, running, identity, RESTORE_TIMEOUT[running.accel], log)
    if not channel.hello.supports(Capability.IDENTITY):
        channel.close()
        running.kill()
        raise VMError("the template's agent cannot take a box's identity")
    log(f"restored from template {t.path.name}")
    return running, channel
