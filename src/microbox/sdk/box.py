"""A handle on one box (like docker-py's Container): lifecycle, exec, files,
logs, snapshots. `rt.boxes` makes and finds them.

What only some methods need (VMs, snapshots, images, packs, the network's
state) is imported by those methods, so a handle used for exec
(`microbox exec`) loads none of it."""

from __future__ import annotations

import builtins
import io
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from microbox import locks, passwd, workspace
from microbox.agent import bulk as agent_transfer
from microbox.agent import ops
from microbox.agent.channel import Channel
from microbox.agent.ops import ExecRequest
from microbox.connection import Connection
from microbox.core import control, reconcile
from microbox.core.boxdir import BoxDir, box_dir
from microbox.cp.chunks import as_chunks
from microbox.cp.report import CopyReport
from microbox.errors import AgentError, ExecFailed, GuestNotFound, InvalidSpec, StateError
from microbox.execution import Execution, Result
from microbox.images.progress import QUIET, Progress
from microbox.net import cacerts, netlog, plan
from microbox.net import policy as net_policy
from microbox.portmap import PortMap
from microbox.sdk.context import Context
from microbox.spec import BoxSpec, validate_name
from microbox.store import boxes as boxes_store
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database
from microbox.store.status import AT_REST, LIVE

if TYPE_CHECKING:
    from microbox.core.lifecycle import Started
    from microbox.core.snapshots import Snapshot
    from microbox.images.pack import PackInfo
    from microbox.sdk.records import BoxInfo
    from microbox.sdk.stats import BoxStats
    from microbox.store.images import Image

FOLLOW_INTERVAL = 0.2  # logs(follow=True) polls the console like tail -f
LOCK_WAIT = 5.0  # a VMM that just exited may hold the box lock a moment longer


def _box_lock(d: BoxDir, name: str) -> locks.Lock:
    deadline = time.monotonic() + LOCK_WAIT
    while (held := d.take_lock()) is None:
        if time.monotonic() > deadline:
            raise StateError(f"box '{name}' is being started or stopped by another command")
        time.sleep(0.05)
    return held


class Box:
    """A handle on one box, like docker-py's Container: lifecycle actions, exec,
    files, logs. A Box from `rt.boxes.run` owns its VM (closing it tears the VM
    down); one from `get`/`list` does not (closing it ends only its session).
    `main` is the command `run` resolved as the box's main one (Docker's rules)."""

    def __init__(self, runtime: Context, record: BoxRecord, *,
                 started: Started | None = None, remove: bool = False,
                 owned: bool = False) -> None:
        self.runtime = runtime
        self.record = record
        self._vm = started.vm if started is not None else None
        self._channel: Channel | None = started.channel if started is not None else None
        self._session_lock = threading.Lock()
        self._remove = remove
        self._owned = owned
        self.main: builtins.list[str] = []

    def __repr__(self) -> str:
        return f"<Box {self.name} {self.id[:12]} {self.status}>"

    # -- what it is ----------------------------------------------------------

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def spec(self) -> BoxSpec:
        return self.record.spec

    @property
    def ports(self) -> tuple[PortMap, ...]:
        """Its published ports (served while it runs)."""
        return self.record.spec.ports

    @property
    def ready_after(self) -> float:
        """Seconds from spawning the VMM to the agent's handshake (0 if not started here)."""
        return self._vm.ready_after if self._vm is not None else 0.0

    def command(self, args: Sequence[str] = (), entrypoint: str | None = None
                ) -> builtins.list[str]:
        """What Docker would run here: the image's Entrypoint (or `entrypoint`) and then
        `args`, or the image's Cmd when there are none ([] if the image names neither)."""
        from microbox.images import config as image_config
        from microbox.images import filestore

        image = filestore.find(self._db, self.record.image)
        config = image.config if image is not None else image_config.ImageConfig()
        return config.command(entrypoint, list(args))

    def reload(self) -> Box:
        """Re-read the box, reconciled with reality (a crashed VMM shows as `error`)."""
        self.record = reconcile.resolve(self._db, self.id)
        return self

    def info(self) -> BoxInfo:
        """Everything known about the box (`.to_json()`: JSON-ready values)."""
        from microbox.core import templates
        from microbox.sdk.records import BoxInfo

        r = self.record
        d = box_dir(r)
        return BoxInfo(
            id=r.id, name=r.name, image=r.image, status=r.status,
            cpus=r.spec.cpus, memory_mib=r.spec.memory_mib,
            auto_remove=r.auto_remove, created_at=r.created_at,
            started_at=r.started_at, finished_at=r.finished_at, pid=r.pid,
            last_error=r.last_error, image_digest=r.image_digest,
            labels=dict(r.spec.labels),
            spec=r.spec.to_json(), dir=str(d.path), alive=d.alive(),
            template=templates.used_by(d), net=self.net_info(),
            mounts=[m.to_json() for m in r.spec.mounts],
        )

    def net_info(self) -> dict[str, Any]:
        """The box's network: its mode, the effective egress policy and how many
        connections were refused; with `user`, the proxy the guest uses; with
        `tap`, its addresses, host link and the firewall's refusals."""
        spec = self.record.spec
        if spec.net == "none":
            return {"mode": "none"}
        info: dict[str, Any] = {"mode": spec.net, "policy": net_policy.effective(spec),
                                "refused": netlog.refused(box_dir(self.record).net_log)}
        if spec.net == "user":
            info["proxy"] = plan.PROXY_URL
            return info
        from microbox.net import nft, tap

        up = tap.present(self.record.id)  # the box runs (its network exists)
        firewall = nft.refused(self.record.id) if up else []
        info.update(address=plan.GUEST, gateway=plan.GATEWAY, resolver=plan.GATEWAY,
                    link=nft.link_of(self.record.id) if up else None,
                    firewall=[r.to_json() for r in firewall])
        info["refused"] += sum(r.packets for r in firewall)
        return info

    def stats(self, interval: float = 0.5) -> BoxStats:
        """What the box costs now, its CPU % over `interval` s (sdk/stats.py)."""
        from microbox.sdk import stats
        return stats.of_box(self, interval)

    def net_log(self) -> bytes:
        """The box's network log: one line per connection its proxy (or, with
        --net tap, its resolver) refused (time, number, destination, reason);
        with --net tap, then one line per destination its firewall refused."""
        from microbox.net import nft, tap

        log = netlog.read(box_dir(self.record).net_log)
        if self.record.spec.net == "tap" and tap.present(self.record.id):
            log += b"".join(f"{r}\n".encode() for r in nft.refused(self.record.id))
        return log

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Box:
        """Boot a created, stopped or crashed box, detached from this process."""
        self.record = control.start(self._db, self.reload().record, self.runtime.log)
        return self

    def stop(self, timeout: float = 10.0) -> Box:
        """Graceful: the guest syncs its disk and powers off; then SIGTERM, SIGKILL."""
        from microbox.core import lifecycle

        channel = self._take_session()
        if self._vm is not None:
            self.record = lifecycle.stop(self._db, self.record, self._vm, channel, timeout)
            self._vm = None
        else:
            if channel is not None:
                channel.close()
            self.record = control.stop(self._db, self.reload().record, timeout)
        return self

    def restart(self, timeout: float = 10.0) -> Box:
        self.stop(timeout)
        return self.start()

    def pause(self) -> Box:
        """Freeze the vCPUs (QMP stop)."""
        self.record = control.pause(self._db, self.reload().record)
        return self

    def resume(self) -> Box:
        """Thaw the vCPUs (QMP cont)."""
        self.record = control.resume(self._db, self.reload().record)
        return self

    def snapshot(self, name: str | None = None) -> Snapshot:
        """Snapshot this running (or paused) box: memory, devices and disk, taken
        consistently while its vCPUs stop for a moment; it keeps running."""
        from microbox.core import snapshots

        record = self.reload().record
        reconcile.require(record, "snapshot")
        return snapshots.create(record, name, log=self.runtime.log)

    def fork(self, n: int = 1, *, name_prefix: str | None = None, rm: bool = False,
             detach: bool = True) -> builtins.list[Box]:
        """`n` running clones of this running box, made through a snapshot (removed
        by gc once the clones are gone); each clone is its own machine. All or
        none: the clones become boxes together once each has started, and if
        this process dies before that, reconcile removes the ones it made.
        Without detach they are owned by this process as run's boxes are."""
        from microbox.core import fork

        if not 1 <= n <= 256:
            raise InvalidSpec(f"fork makes 1 to 256 clones, not {n}")
        prefix = name_prefix or f"{self.name}-fork"
        names = [f"{prefix}-{i}" for i in range(1, n + 1)]
        for name in names:
            boxes_store.check_name_free(self._db.conn, validate_name(name))
        record = self.reload().record
        reconcile.require(record, "fork")
        made = fork.clones(self._db, record, names, rm=rm, attached=not detach,
                           log=self.runtime.log)
        clones = [Box(self.runtime, s.record, started=s, remove=rm, owned=not detach)
                  for s in made]
        if detach:
            for clone in clones:
                clone.release()
        return clones

    def pack(self, path: str | Path, *, stop: bool = False,
             progress: Progress = QUIET) -> PackInfo:
        """Write this box to the pack file `path`: its disk flattened with its whole
        backing chain (the pack needs no template or image store), its image's
        config and its spec. A running or paused box is stopped first only with
        `stop` (and stays stopped); otherwise that is refused."""
        from microbox.images import config as image_config
        from microbox.images import filestore
        from microbox.images import pack as packs

        record = self.reload().record
        if record.status in LIVE:
            if not stop:
                raise StateError(f"box '{self.name}' is {record.status} and is packed only "
                                 "when stopped", f"microbox pack create --from-box "
                                 f"{self.name} --stop -o {path}", "to stop it first")
            progress.step(f"stopping box {self.name}")
            record = self.stop().record
        reconcile.require(record, "pack")
        d = box_dir(record)
        held = _box_lock(d, self.name)
        with held:  # no start while the disk is read
            image = filestore.find(self._db, record.image)
            source = {"box": record.name, "box_id": record.id, "image": record.image,
                      "digest": record.image_digest}
            return packs.write(Path(path), d.disk, disk_format="qcow2", kind="box",
                               source=source, config=image.config if image else
                               image_config.ImageConfig(), spec=record.spec,
                               progress=progress)

    def commit(self, name: str, *, changes: builtins.list[str] | None = None,
               progress: Progress = QUIET) -> Image:
        """Make this box's disk and configuration the image `name` (Docker's
        commit): a running box is synced and paused for the copy, then runs on.
        `changes` are Dockerfile lines (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER,
        WORKDIR, STOPSIGNAL, VOLUME) applied to the image's configuration."""
        from microbox.build import boxcommit

        record = self.reload().record
        return boxcommit.commit_box(self._db, record, name, changes or [],
                                    sync=lambda: self.run(["sync"]),
                                    progress=progress)

    def set(self, *, cpus: int | None = None, memory_mib: int | None = None,
            reset_policy: bool = False, net: str | None = None,
            allow_hosts: Sequence[str] | None = None, allow_cidrs: Sequence[str] | None = None,
            deny_all: bool | None = None, allow_private: bool | None = None,
            add_hosts: Sequence[str] | None = None) -> Box:
        """Change a stopped box's CPUs, memory or network (`net`, `allow_hosts`,
        `allow_cidrs`, `deny_all`, `allow_private`, `add_hosts`, as in BoxSpec;
        None leaves a value as it is; lists replace the box's; reset_policy drops
        its egress policy first); applied at its next start."""
        def listed(v: Sequence[str] | None) -> tuple[str, ...] | None:
            return None if v is None else tuple(v)

        self.record = control.set_spec(
            self._db, self.reload().record, cpus=cpus, memory_mib=memory_mib,
            reset_policy=reset_policy, net=net, allow_hosts=listed(allow_hosts),
            allow_cidrs=listed(allow_cidrs), deny_all=deny_all, allow_private=allow_private,
            add_hosts=listed(add_hosts))
        return self

    def delete(self, force: bool = False) -> None:
        """Remove the box; a running one needs force (it is killed)."""
        self.runtime.forget(self.id, self)
        channel = self._take_session()
        if channel is not None:
            channel.close()
        if self._vm is not None:
            from microbox.core import lifecycle

            lifecycle.destroy(self._db, self.record, self._vm)
            self._vm = None
            return
        control.delete(self._db, self.reload().record, force)

    # -- inside --------------------------------------------------------------

    def exec(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
             cwd: str | None = None, user: str | None = None, stdin: bool = False,
             tty: bool = False, rows: int = 24, cols: int = 80,
             timeout: float | None = None, detach: bool = False,
             main: bool = False) -> Execution:
        """Start a process. With detach it outlives this session (output to the
        console log); with main as well, the box stops when it exits."""
        spec = self.record.spec
        defaults = {**plan.exec_env(spec.net),
                    **cacerts.exec_env(bool(spec.ca_certs) or spec.trust_host_ca)}
        req = ExecRequest(argv=list(argv), env={**defaults, **spec.env, **(env or {})},
                          cwd=cwd or spec.workdir, user=user or spec.user, tty=tty, rows=rows,
                          cols=cols, stdin=stdin, timeout=timeout, detach=detach,
                          main=main)
        stream, pid = ops.start_exec(self._session(), req)
        return Execution(stream, pid)

    def shell(self, *, user: str | None = None, tty: bool = True, rows: int = 24,
              cols: int = 80, env: dict[str, str] | None = None) -> Execution:
        """An interactive login shell: the user's shell from the image's
        /etc/passwd (falling back to /bin/sh), on a PTY unless `tty` is False."""
        who = user or self.record.spec.user or "root"
        argv = [passwd.login_shell(self._passwd(), who), "-l"]
        try:
            return self.exec(argv, env=env, user=user, stdin=True, tty=tty, rows=rows,
                             cols=cols)
        except ExecFailed:
            if argv[0] == "/bin/sh":
                raise
            return self.exec(["/bin/sh", "-l"], env=env, user=user, stdin=True, tty=tty,
                             rows=rows, cols=cols)

    def connect(self, port: int, *, host: str = "127.0.0.1") -> Connection:
        """A TCP connection to `port` inside the box (to `host` as the box sees
        it), carried over the agent channel: no network device is needed."""
        return Connection(agent_transfer.connect(self._session(), port, host))

    def _passwd(self) -> bytes:
        buf = io.BytesIO()
        try:
            ops.get_file(self._session(), "/etc/passwd", buf, passwd.LIMIT)
        except (GuestNotFound, AgentError):
            return b""
        return buf.getvalue()

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            env: dict[str, str] | None = None, cwd: str | None = None,
            user: str | None = None, timeout: float | None = None,
            limit: int | None = None) -> Result:
        """Run a command to completion and collect its output (at most `limit`
        bytes of each stream kept; see Execution.collect)."""
        ex = self.exec(argv, env=env, cwd=cwd, user=user, stdin=input is not None,
                       timeout=timeout)
        return ex.collect(input, limit)

    def put(self, local: str | Path | IO[bytes], remote: str, mode: int | None = None) -> None:
        """Copy a local file (path or binary file object) to `remote`, mode kept."""
        if isinstance(local, (str, Path)):
            path = Path(local)
            with open(path, "rb") as f:
                ops.put_file(self._session(), f, remote,
                             path.stat().st_mode if mode is None else mode)
        else:
            ops.put_file(self._session(), local, remote, 0o644 if mode is None else mode)

    def get(self, remote: str, local: str | Path | IO[bytes],
            max_bytes: int | None = None) -> int:
        """Copy `remote` to a local path (written whole or not at all) or file
        object; returns its mode. A file over max_bytes is refused (AgentError)."""
        if isinstance(local, (str, Path)):
            path = Path(local)
            tmp = path.with_name(f".{path.name}.microbox-tmp")
            try:
                with open(tmp, "wb") as f:
                    mode = ops.get_file(self._session(), remote, f, max_bytes)
                tmp.chmod(mode)
                tmp.replace(path)
            finally:
                tmp.unlink(missing_ok=True)
            return mode
        return ops.get_file(self._session(), remote, local, max_bytes)

    # -- copying trees (microbox cp) -------------------------------------------
    #
    # Each copy works on a running box. A created or stopped box is started for
    # the copy and stopped again when it ends, whatever happened (the report says
    # `started`); a created box is then `stopped`. Any other state is refused as
    # for exec (a crashed box names `microbox delete`). docs/boxes.md, "Copying files".

    def copy_in(self, src: str | Path, dest: str) -> CopyReport:
        """Copy the host file, symlink or tree `src` to `dest` in the box with
        `docker cp`'s rules: into `dest` if it is a directory, else as that name;
        `src` ending in `/.` copies a directory's contents. Modes and mtimes are
        kept; symlinks are copied as symlinks, never followed; entries are owned
        by root in the box. Memory stays bounded whatever the size."""
        from microbox.cp import transfer

        return self._copy(transfer.copy_in, str(src), dest)

    def copy_out(self, src: str, dest: str | Path) -> CopyReport:
        """Copy `src` in the box (file, symlink or tree) to the host path `dest`
        with `docker cp`'s rules. What the box sends is untrusted: nothing is made,
        replaced or followed outside `dest`, setuid/setgid bits are dropped, and an
        unsafe entry stops the copy (Refused) leaving what was already copied
        (microbox.cp.extract)."""
        from microbox.cp import transfer

        return self._copy(transfer.copy_out, src, str(dest))

    def copy_in_tar(self, tar: IO[bytes] | Iterable[bytes], dest: str) -> CopyReport:
        """Extract a tar stream (a binary file or byte chunks) into the existing
        directory `dest` in the box, as `docker cp - BOX:DEST` does."""
        from microbox.cp import transfer

        return self._copy(transfer.copy_in_tar, as_chunks(tar), dest)

    def copy_out_tar(self, src: str, out: IO[bytes]) -> CopyReport:
        """Write the box's tar of `src` (top entry: its base name) to the binary
        file `out`, as `docker cp BOX:SRC -` does. The tar is passed on as the box
        made it: extract it as untrusted input (or use copy_out)."""
        from microbox.cp import transfer

        return self._copy(transfer.copy_out_tar, src, out)

    def export(self, out: IO[bytes]) -> CopyReport:
        """Write a tar of the box's root file system to the binary file `out`, as
        `docker export` does: the root disk only (mount points such as /proc,
        /sys, /dev, /tmp and /run are empty directories), with owners, modes,
        mtimes, symlinks, hard links, devices and extended attributes; names
        start with `./`. A stopped box is started for it and stopped again. The
        tar is the box's: extract it as untrusted input."""
        from microbox.cp import transfer

        return self._copy(transfer.export_root, out, self.runtime.log)

    def _copy(self, fn: Callable[..., CopyReport], *args: Any) -> CopyReport:
        record = self.reload().record
        if record.status not in AT_REST:
            reconcile.require(record, "cp")
            return fn(self._session(), self.name, *args)
        self.start()
        try:
            report = fn(self._session(), self.name, *args)
        finally:
            self.stop()
        report.started = True
        return report

    def ping(self) -> None:
        ops.ping(self._session())

    def is_dir(self, path: str) -> bool:
        """Whether `path` is a directory in the running box."""
        from microbox.cp import transfer

        return transfer.is_guest_dir(self._session(), path)

    # -- workspaces (microbox.workspace; docs/workspace.md) ------------------

    def workspace_push(self, path: str | Path = ".", dest: str = workspace.DEFAULT_DEST,
                       include_untracked: bool = False) -> workspace.WorkspacePush:
        """Ship the git repository holding `path` (its tracked files as they are
        in the work tree; untracked ones git does not ignore too if asked) into
        `dest`, and commit them there as the base (refs/microbox/base). Pushing
        again replaces the tree: files no longer shipped are deleted."""
        return workspace.push(self, path, dest, include_untracked)

    def workspace_export(self, dest: str = workspace.DEFAULT_DEST) -> bytes:
        """A binary patch of everything that changed in `dest` since the base
        (commits, staged, unstaged and new files), for `git apply` at the top of
        the host repository; the guest repository is left as it was."""
        return workspace.export(self, dest)

    @staticmethod
    def workspace_files(path: str | Path = ".", include_untracked: bool = False
                        ) -> builtins.list[workspace.WorkspaceFile]:
        """The files workspace_push would ship (microbox.workspace.workspace_files)."""
        return workspace.workspace_files(path, include_untracked)

    def logs(self, tail: int | None = None) -> bytes:
        """The console log (the last `tail` lines, if given)."""
        return b"".join(self.follow_logs(tail, follow=False))

    def follow_logs(self, tail: int | None = None, *, follow: bool = True,
                    stop: threading.Event | None = None) -> Iterator[bytes]:
        """The console log (its last `tail` lines), then new output as it comes
        until the VM exits or `stop` is set (checked every FOLLOW_INTERVAL)."""
        d = box_dir(self.record)
        if not d.console_log.exists():
            return
        with open(d.console_log, "rb") as f:
            data = f.read()
            if tail is not None:
                data = b"".join(data.splitlines(keepends=True)[-tail:]) if tail > 0 else b""
            if data:
                yield data
            stop = stop or threading.Event()
            while follow and not stop.is_set():
                chunk = f.read()
                if chunk:
                    yield chunk
                elif not d.alive():
                    return
                else:
                    stop.wait(FOLLOW_INTERVAL)  # like tail -f without inotify

    # -- the session and the owned VM ----------------------------------------

    def _session(self) -> Channel:
        """This handle's agent session, opened on first use; shared by every
        execution made through it (streams are multiplexed). One whose shim has
        gone (the shim is replaced on the next connect) is opened anew."""
        with self._session_lock:
            if self._channel is None or self._channel.ended():
                if self._channel is not None:
                    self._channel.close()
                    self._channel = None
                self._channel = control.connect(self.reload().record)
            return self._channel

    def _take_session(self) -> Channel | None:
        with self._session_lock:
            channel, self._channel = self._channel, None
        return channel

    @property
    def _db(self) -> Database:
        return self.runtime.db

    def release(self) -> None:
        """Let go of the box: close the session, leave the VM running."""
        channel = self._take_session()
        if channel is not None:
            channel.close()
        self._owned = False

    def close(self) -> None:
        """Tear an owned VM down (removed if started with rm, else stopped);
        for any other handle, close the session only."""
        if not self._owned:
            self.release()
            return
        self._owned = False
        if self._remove:
            self.delete(force=True)
        else:
            self.stop()

    def __enter__(self) -> Box:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
