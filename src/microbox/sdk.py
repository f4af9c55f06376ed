"""The Python SDK: Runtime, Box, Execution. The CLI is a thin layer over it.

    import microbox
    rt = microbox.Runtime()
    with rt.run("busybox") as box:
        result = box.run(["echo", "hello"])
        print(result.exit_code, result.stdout)

Leaving the `with` block always tears the VM down, and a box started by this
process dies with it even if the process is SIGKILLed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import signal as _signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from microbox import paths
from microbox.agent import ops
from microbox.agent.channel import Channel, Stream
from microbox.agent.ops import ExecRequest, ExitStatus
from microbox.agent.protocol import CHUNK, T
from microbox.core import control, lifecycle, reconcile, vm
from microbox.core.spec import DEFAULT_MEMORY_MIB, BoxSpec
from microbox.errors import AgentError
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: bytes
    stderr: bytes
    status: ExitStatus


class Execution:
    """A process running in a box: stream its output, feed its stdin, signal it."""

    def __init__(self, stream: Stream, pid: int) -> None:
        self._stream = stream
        self.pid = pid
        self.status: ExitStatus | None = None

    def write(self, data: bytes) -> None:
        for i in range(0, len(data), CHUNK):
            self._stream.send(T.STDIN, data[i:i + CHUNK])

    def close_stdin(self) -> None:
        self._stream.send(T.STDIN, b"")

    def signal(self, sig: int = _signal.SIGTERM) -> None:
        self._stream.send(T.SIGNAL, {"signal": int(sig)})

    def resize(self, rows: int, cols: int) -> None:
        self._stream.send(T.RESIZE, {"rows": rows, "cols": cols})

    def events(self) -> Iterator[tuple[str, bytes]]:
        """("stdout"|"stderr", bytes) as the process writes; ends when it exits."""
        while self.status is None:
            event = ops.next_event(self._stream)
            if isinstance(event, ExitStatus):
                self.status = event
                self._stream.close()
                return
            yield ("stdout" if event[0] == T.STDOUT else "stderr"), event[1]

    def wait(self) -> ExitStatus:
        """Wait for the exit, discarding output not yet read."""
        for _ in self.events():
            pass
        assert self.status is not None
        return self.status


def _feed(ex: Execution, data: bytes) -> None:
    with contextlib.suppress(AgentError):  # the process may exit before reading it all
        ex.write(data)
        ex.close_stdin()


class Box:
    """A box with a running VM and a session with its agent."""

    def __init__(self, runtime: Runtime, started: lifecycle.Started, remove: bool,
                 owned: bool = True) -> None:
        self.runtime = runtime
        self.record: BoxRecord = started.record
        self._vm = started.vm
        self._channel: Channel | None = started.channel
        self._remove = remove
        self._owned = owned  # closing an owned box tears its VM down

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def ready_after(self) -> float:
        """Seconds from spawning the VMM to the agent's handshake."""
        return self._vm.ready_after if self._vm is not None else 0.0

    @property
    def channel(self) -> Channel:
        if self._channel is None:
            raise AgentError(f"box {self.name!r} is closed")
        return self._channel

    def exec(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
             cwd: str | None = None, user: str | None = None, stdin: bool = False,
             tty: bool = False, rows: int = 24, cols: int = 80,
             timeout: float | None = None, detach: bool = False,
             main: bool = False) -> Execution:
        """Start a process. With detach it outlives this session (output to the
        console log); with main as well, the box stops when it exits."""
        spec = BoxSpec.from_json(self.record.spec)
        req = ExecRequest(argv=list(argv), env={**spec.env, **(env or {})},
                          cwd=cwd or spec.workdir, user=user or spec.user, tty=tty, rows=rows,
                          cols=cols, stdin=stdin, timeout=timeout, detach=detach,
                          main=main)
        stream, pid = ops.start_exec(self.channel, req)
        return Execution(stream, pid)

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            env: dict[str, str] | None = None, cwd: str | None = None,
            user: str | None = None, timeout: float | None = None) -> Result:
        """Run a command to completion and collect its output."""
        ex = self.exec(argv, env=env, cwd=cwd, user=user, stdin=input is not None,
                       timeout=timeout)
        feeder = None
        if input is not None:
            # fed from a thread: a large input and a large output cannot wait on each other
            feeder = threading.Thread(target=_feed, args=(ex, input), daemon=True)
            feeder.start()
        out, err = bytearray(), bytearray()
        for name, data in ex.events():
            (out if name == "stdout" else err).extend(data)
        if feeder is not None:
            feeder.join()
        assert ex.status is not None
        return Result(ex.status.exit_code, bytes(out), bytes(err), ex.status)

    def put(self, local: str | Path | IO[bytes], remote: str, mode: int | None = None) -> None:
        if isinstance(local, (str, Path)):
            path = Path(local)
            with open(path, "rb") as f:
                ops.put_file(self.channel, f, remote, path.stat().st_mode if mode is None
                             else mode)
        else:
            ops.put_file(self.channel, local, remote, 0o644 if mode is None else mode)

    def get(self, remote: str, local: str | Path | IO[bytes]) -> None:
        if isinstance(local, (str, Path)):
            path = Path(local)
            tmp = path.with_name(f".{path.name}.microbox-tmp")
            try:
                with open(tmp, "wb") as f:
                    mode = ops.get_file(self.channel, remote, f)
                tmp.chmod(mode)
                tmp.replace(path)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            ops.get_file(self.channel, remote, local)

    def release(self) -> None:
        """Let go of a detached box: close the session, leave the VM running."""
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def ping(self) -> None:
        ops.ping(self.channel)

    def close(self) -> None:
        """Tear the VM down: removed if the box was started with rm, else stopped.
        A box obtained with Runtime.attach() only closes its session."""
        if not self._owned:
            self.release()
            return
        channel, self._channel = self._channel, None
        if self._remove:
            if channel is not None:
                channel.close()
            lifecycle.destroy(self.runtime.db, self.record, self._vm)
            return
        self.record = lifecycle.stop(self.runtime.db, self.record, self._vm, channel)

    def __enter__(self) -> Box:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Runtime:
    """Entry point of the SDK: makes and finds boxes under MICROBOX_HOME."""

    def __init__(self, *, log: vm.Log | None = None) -> None:
        self.log: vm.Log = log or vm._quiet
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(paths.home() / "microbox.db")
        return self._db

    def run(self, image: str, *, name: str | None = None, cpus: int = 1,
            memory_mib: int = DEFAULT_MEMORY_MIB, env: dict[str, str] | None = None,
            workdir: str | None = None, user: str | None = None, accel: str = "auto",
            kernel: str | None = None, rm: bool = True, detach: bool = False) -> Box:
        """Create and start a box; use it as a context manager to tear it down."""
        spec = BoxSpec(image=image, cpus=cpus, memory_mib=memory_mib, env=env or {},
                       workdir=workdir, user=user, accel=accel, kernel=kernel)
        return self.run_spec(spec, name=name, rm=rm, detach=detach)

    def run_spec(self, spec: BoxSpec, *, name: str | None = None, rm: bool = True,
                 detach: bool = False) -> Box:
        """run() for a ready-made BoxSpec."""
        record, lock = lifecycle.create(self.db, spec, name=name, auto_remove=rm,
                                           start_next=True)
        started = lifecycle.start(self.db, record, lock, attached=not detach, log=self.log)
        return Box(self, started, remove=rm)

    def resolve(self, ref: str) -> BoxRecord:
        """A box by name, id or unique id prefix, reconciled with reality."""
        return reconcile.resolve(self.db, ref)

    def boxes(self) -> list[BoxRecord]:
        """Every box, reconciled (dead `--rm` boxes and abandoned creates are removed)."""
        return reconcile.reconcile_all(self.db)

    def attach(self, ref: str) -> Box:
        """A Box handle on a running box (a new agent session; the VM is not owned)."""
        record = self.resolve(ref)
        channel = control.connect(record)
        return Box(self, lifecycle.Started(record, None, channel), remove=False, owned=False)

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
