"""Box lifecycle as transactions: every step is undone if a later one fails.

While a box boots its row says `starting` and its pid columns name the
*starter* (the command booting it), not the VMM. If the starter dies mid-boot,
reconcile sees a dead starter and finishes the rollback for it (abandon).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
import uuid
from dataclasses import dataclass

from microbox import failpoints, locks, paths, portmap, volumes
from microbox.agent.channel import Channel, Identity
from microbox.core import boxmounts, catrust, shim, shim_start, templates, vm, warm
from microbox.core.boxdir import PORTS, BoxDir, box_dir
from microbox.core.log import Log, quiet
from microbox.core.orphans import scan
from microbox.core.templates import Template
from microbox.errors import MicroboxError, VMError
from microbox.images import builtin, filestore
from microbox.net import nft, plan, tap, upstream
from microbox.net import policy as net_policy
from microbox.spec import BoxSpec, validate_name
from microbox.store import boxes, events
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database
from microbox.store.status import HAS_VM, Status
from microbox.vmm import process


def starter() -> dict[str, object]:
    return {"status": Status.STARTING, "pid": os.getpid(),
            "pid_start": process.start_time(os.getpid())}


def create(db: Database, spec: BoxSpec, *, name: str | None = None,
           auto_remove: bool = False, start_next: bool = False,
           snapshot: Template | None = None,
           image_digest: str | None = None) -> tuple[BoxRecord, locks.Lock]:
    """Validate, then make the dir, the disk (unless start_next: the start makes
    it) and the row; or nothing at all. `image_digest` (a snapshot's) names the
    image file the box's disk chain ends in, whatever the image's name means
    now (it may have been removed with `image rm -f`, or rebuilt).

    Returns the record and the box lock, held so that no other
    process mistakes the half-made box for a dead one. Pass it to start(), or
    close it to release the box. With start_next, the row is `starting` and
    the box is rolled back entirely if its first start fails.
    """
    spec.validate()
    if spec.net == "tap":
        tap.available()  # root, /dev/net/tun, nftables: refused before anything is made
    portmap.check_free(spec.ports)
    if name is not None:
        boxes.check_name_free(db.conn, validate_name(name))
    if start_next:
        volumes.check_free(db, "", spec)  # refused before anything is made
    volumes.ensure(spec)  # `-v NAME:...` makes a missing volume, as Docker does
    if image_digest is None:
        image = builtin.ensure(db, spec.image)
        image_name, image_digest, image_path = image.name, image.digest, image.path
    else:
        image_name, image_path = spec.image, filestore.blob_path(image_digest)
    record = BoxRecord(id=uuid.uuid4().hex, name=name or f"box-{secrets.token_hex(4)}",
                       image=image_name, spec=spec, image_digest=image_digest,
                       status=Status.CREATED, auto_remove=auto_remove)
    if start_next:
        record = record.with_(pending=True, **starter())
    d = box_dir(record)
    lock = d.create()
    try:
        if not start_next:  # else its first start makes it, over what it starts from
            vm.create_disk(image_path, d.disk)
        templates.mark(d, snapshot)  # its first start restores the snapshot
        boxes.insert(db, record)
    except BaseException:
        lock.close()
        d.remove()
        raise
    if not start_next:  # a pending create is made by its start (events there)
        events.of_box("create", record)
    return record, lock


@dataclass
class Started:
    record: BoxRecord
    vm: vm.Running | None  # None when this process did not start the VM
    channel: Channel


def start(db: Database, record: BoxRecord, lock: locks.Lock, *, attached: bool,
          log: Log = quiet, commit: bool = True) -> Started:
    """Boot the box; `lock` (the held box lock) passes to the VMM and is closed here.

    On failure the box returns to where it was: a pending create is removed,
    an existing box goes back to its previous status with the error recorded.
    Without `commit` the row stays `starting` (a pending create is rolled back
    by reconcile should this process die) until the caller writes the returned
    record, with others in one transaction (fork's clones: all or none).
    """
    before = record.status
    if record.status != Status.STARTING:
        record = record.with_(**starter())
        boxes.update(db, record)
    net: tap.Attachment | None = None
    try:
        # a volume another box holds, a taken host port: the start fails before anything runs
        volumes.check_free(db, record.id, record.spec)
        published = portmap.bind(record.spec.ports)
    except BaseException as exc:
        lock.close()
        _roll_back(db, record, before, str(exc))
        raise
    try:
        try:
            net = _network(record)
            running, channel = _boot(record, lock, attached=attached, log=log,
                                     tap_fd=net.tap if net else None)
        except BaseException as exc:
            lock.close()  # idempotent: the VMM took it, or never will
            end_network(record)
            _roll_back(db, record, before, str(exc))
            raise
        try:
            channel = _hand_to_shim(record, channel, published, net)
            catrust.install(channel, record.spec)
        except BaseException as exc:
            running.kill()
            shim.wait_gone(box_dir(record))
            end_network(record)
            _roll_back(db, record, before, str(exc))
            raise
    finally:
        for sock in published:
            sock.close()  # the shim holds its own copies
        if net is not None:
            net.close()  # QEMU holds the TAP, the shim the resolver's socket
    pending = record.pending
    record = record.with_(status=Status.RUNNING, pending=False, started_at=time.time(),
                          pid=running.pid, pid_start=running.pid_start, last_error=None)
    try:
        if commit:
            boxes.update(db, record)
    except BaseException as exc:
        channel.close()
        running.kill()
        _roll_back(db, record, before, str(exc))
        raise
    if commit:
        if pending:
            events.of_box("create", record)
        events.of_box("start", record)
    return Started(record, running, channel)


def _network(record: BoxRecord) -> tap.Attachment | None:
    """A --net tap box's namespace, TAP and firewall chain, made before its VMM
    (which inherits the TAP); None for other modes."""
    if record.spec.net != "tap":
        return None
    tap.available()
    policy = net_policy.effective(record.spec)
    assert policy is not None
    return tap.setup(record.id, box_dir(record).path, nft.Rules.of(policy))


def end_network(record: BoxRecord) -> None:
    """Remove a box's --net tap network once its VMM is gone (idempotent)."""
    tap.teardown(record.id)


def _hand_to_shim(record: BoxRecord, boot: Channel, published: list[socket.socket],
                  net: tap.Attachment | None,
                  owner: shim_start.Owner | None = None) -> Channel:
    """The boot session ends; the box's shim takes its agent ports, the
    published ports' listeners and, with --net user, the egress proxy (with
    --net tap, the box's resolver), its policy written first, and this command
    becomes one of its clients (and with `owner`, the one whose exit kills the VMM)."""
    boot.close()
    need = plan.capability(record.spec.net)
    if need is not None and not boot.hello.supports(need):
        raise VMError("the box's agent cannot configure its network; run 'microbox agent "
                      "build' and start the box again")
    d = box_dir(record)
    proxies = upstream.from_environ(os.environ) if record.spec.net == "user" else None
    policy = net_policy.write(d.net_policy, record.spec, proxies)
    shim_start.spawn(d, PORTS, [shim_start.Forward(sock, m.guest_port)
                                for sock, m in zip(published, record.spec.ports, strict=True)],
                     policy, shim_start.resolver(record.id, net.dns, net.gateway) if net else None,
                     owner)
    return shim.connect(d, time.monotonic() + shim_start.READY_TIMEOUT)


def start_spare(db: Database, record: BoxRecord, lock: locks.Lock, *, log: Log) -> BoxRecord:
    """Make the pending create `record` a pool's spare: started as `start` does
    (detached), run once (so TCG has translated the exec path), then left with
    no session and no shim, for `adopt` to hand out. Removed if any step fails."""
    try:
        running, channel = _boot(record, lock, attached=False, log=log, tap_fd=None)
    except BaseException as exc:
        lock.close()
        _roll_back(db, record, Status.STARTING, str(exc))
        raise
    try:
        failpoints.reach("spare-booted")
        warm.warm_up(channel)
        channel.close()  # the agent waits for a host, as a template's clone does
        record = record.with_(status=Status.SPARE, pending=False, started_at=time.time(),
                              pid=running.pid, pid_start=running.pid_start)
        boxes.update(db, record)
    except BaseException:
        destroy(db, record, running)
        raise
    return record


def adopt(db: Database, record: BoxRecord, vmm: vm.Running, published: list[socket.socket],
          *, attached: bool, log: Log) -> Started:
    """Hand a spare (its row already taken: `starting`, this command its
    starter) to its box: the agent takes the box's identity in the handshake,
    then the shim takes the ports. Attached, the box's VMM dies with this
    process through its shim (it is not our child). The box is removed if this fails."""
    d = box_dir(record)
    try:
        channel = vm.await_agent(d, vmm, Identity(record.name, record.id),
                                 warm.RESTORE_TIMEOUT[vmm.accel], log)
        owner = None
        if attached:
            owner = _owner(d, vmm)
        try:
            channel = _hand_to_shim(record, channel, published, None, owner)
            catrust.install(channel, record.spec)
        finally:
            if owner is not None:
                os.close(owner.pipe)
                os.close(owner.vmm)
    except BaseException:
        destroy(db, record, vmm)
        raise
    record = record.with_(status=Status.RUNNING, pending=False, started_at=time.time(),
                          pid=vmm.pid, pid_start=vmm.pid_start, last_error=None)
    boxes.update(db, record)
    return Started(record, vmm, channel)


def _owner(d: BoxDir, vmm: vm.Running) -> shim_start.Owner:
    """This process's pipe to the shim (it keeps the write end in `vmm`), and a
    pidfd of the VMM, checked to be the spare's and not a reuse of its pid.
    The shim kills the VMM when this process dies; should the shim die first,
    the box's owner.lock (held by this process, kept in `vmm`) tells reconcile
    that the box's owner is gone."""
    pidfd = os.pidfd_open(vmm.pid)
    if not process.same_process(vmm.pid, vmm.pid_start):
        os.close(pidfd)
        raise VMError("the pool's box exited before it was taken")
    vmm.owner_lock = locks.create_held(d.owner)
    read, vmm.owner_fd = os.pipe()
    return shim_start.Owner(read, pidfd)


def _boot(record: BoxRecord, lock: locks.Lock, *, attached: bool, log: Log,
          tap_fd: int | None) -> tuple[vm.Running, Channel]:
    """Warm (restored from a template) on a box's first start, unless it asks to
    boot cold; cold from its own disk on every later start."""
    d = box_dir(record)
    identity = Identity(record.name, record.id, boxmounts.hello(record.spec))
    running, channel = _boot_vm(record, d, lock, identity, attached=attached, log=log,
                                tap_fd=tap_fd)
    try:
        boxmounts.verify(channel, record.spec)
    except BaseException:
        channel.close()
        running.kill()
        raise
    return running, channel


def _boot_vm(record: BoxRecord, d: BoxDir, lock: locks.Lock, identity: Identity, *,
             attached: bool, log: Log, tap_fd: int | None) -> tuple[vm.Running, Channel]:
    backing = templates.used_by(d)
    if record.started_at is None and backing and backing.startswith(templates.SNAPSHOT):
        return warm.restore_snapshot(d, record.spec, Template(paths.home() / backing), lock,
                                     attached=attached, identity=identity, log=log,
                                     tap_fd=tap_fd)
    first = record.started_at is None
    # a box with volumes boots cold (core/boxmounts.py)
    if first and not record.spec.cold and boxmounts.warmable(record.spec) and \
            record.image_digest:
        return warm.start(d, record.spec, filestore.blob_path(record.image_digest),
                          record.image_digest, lock, attached=attached, identity=identity,
                          log=log, tap_fd=tap_fd)
    if first and not d.disk.exists() and record.image_digest:
        vm.create_disk(filestore.blob_path(record.image_digest), d.disk)
    return vm.boot(d, record.spec, lock, attached=attached, identity=identity, log=log,
                   tap_fd=tap_fd)


def _roll_back(db: Database, record: BoxRecord, before: Status, error: str) -> None:
    if record.pending:
        destroy(db, record)
    else:
        status = before if before != Status.STARTING else Status.STOPPED
        boxes.update(db, record.with_(status=status, pid=None, pid_start=None,
                                      last_error=error[:500]))


def abandon(db: Database, record: BoxRecord) -> BoxRecord | None:
    """Finish the rollback of a start whose starter died; None if the box is gone."""
    _kill_vmm(record)
    if record.pending or record.auto_remove:
        destroy(db, record)
        return None
    record = record.with_(status=Status.STOPPED, pid=None, pid_start=None,
                          last_error="its start was interrupted")
    box_dir(record).remove_runtime_files()
    boxes.update(db, record)
    return record


def _kill_vmm(record: BoxRecord, running: vm.Running | None = None) -> None:
    """Kill the box's VMM, found by its recorded identity or from /proc."""
    d = box_dir(record)
    if running is not None:
        running.kill()
    elif not d.alive():
        pass
    elif record.status in HAS_VM and record.pid is not None:
        if process.same_process(record.pid, record.pid_start):
            process.kill_group(record.pid)
            process.wait_exit(record.pid, 10.0)
    else:
        for v in scan():
            if v.box_id == record.id and process.same_process(v.pid, v.started):
                process.kill_group(v.pid)
                process.wait_exit(v.pid, 10.0)
    shim.kill(d)
    end_network(record)


FLUSH_TIMEOUT = 5.0  # s: a box's agent unmounting its writable mounts before a delete


def _flush_mounts(record: BoxRecord, running: vm.Running | None) -> None:
    """Before a box with a writable volume or a cached host folder is killed,
    its agent shuts it down (processes ended, `sync`, every mount unmounted):
    what the box wrote there is in its own page cache until then, and a
    killed VM would lose it. A box that does not answer is killed as before."""
    if not any(m.kind == "volume" or m.cached for m in record.spec.mounts
               if not m.read_only):
        return
    d = box_dir(record)
    pid = running.pid if running is not None else record.pid
    if pid is None or not d.alive():
        return
    try:
        channel = shim.connect(d, time.monotonic() + 2.0, record.spec.ports)
    except MicroboxError:
        return
    try:
        vm.stop_gracefully(pid, channel, FLUSH_TIMEOUT)
    finally:
        channel.close()


def destroy(db: Database, record: BoxRecord, running: vm.Running | None = None) -> None:
    """Kill the VMM if any (a box with writable volumes is shut down by its
    agent first), remove the box dir and the row. Idempotent."""
    _flush_mounts(record, running)
    _kill_vmm(record, running)
    box_dir(record).remove()
    if boxes.delete(db, record.id):  # once, whoever removes it
        events.of_box("delete", record)


def stop(db: Database, record: BoxRecord, running: vm.Running | None,
         channel: Channel | None, timeout: float = 10.0) -> BoxRecord:
    """Graceful first (the agent syncs and powers off), then SIGTERM, then SIGKILL."""
    pid = running.pid if running is not None else record.pid
    alive = pid is not None and box_dir(record).alive()
    if alive and pid is not None and not vm.stop_gracefully(pid, channel, timeout):
        vm.terminate(pid, grace=timeout / 2)
    if channel is not None:
        channel.close()
    if running is not None and running.proc is not None:
        running.proc.wait()
    if running is not None:
        running.disown()
    shim.wait_gone(box_dir(record))
    end_network(record)
    box_dir(record).remove_runtime_files()
    record = record.with_(status=Status.STOPPED, finished_at=time.time(), pid=None, pid_start=None)
    boxes.update(db, record)
    events.of_box("stop", record)
    return record
