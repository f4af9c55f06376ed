"""Operations of protocol v1 over a Channel: exec, file put/get, ping, shutdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any

from microbox.agent.channel import Channel, Stream
from microbox.agent.protocol import CHUNK, Frame, ProtocolError, T, untrusted_text, wire
from microbox.errors import AgentError, ExecFailed, GuestNotFound, GuestRefused, UsageError

DEFAULT_TIMEOUT = 30.0


def _wire(text: str) -> str | dict[str, str]:
    try:
        return wire(text)
    except ValueError as exc:
        raise UsageError(f"argument {exc}") from None


@dataclass(frozen=True)
class ExecRequest:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None
    tty: bool = False
    rows: int = 24
    cols: int = 80
    stdin: bool = False
    timeout: float | None = None
    detach: bool = False
    main: bool = False  # with detach: the box powers off when this process exits

    def payload(self) -> dict[str, Any]:
        if not self.argv:
            raise UsageError("no command given", "microbox run IMAGE -- CMD [ARG...]")
        for arg in [*self.argv, *self.env, *self.env.values(), self.cwd or ""]:
            if "\0" in arg:
                raise UsageError(f"argument {arg!r} contains a NUL byte, which execve cannot pass")
        body: dict[str, Any] = {
            "argv": [_wire(a) for a in self.argv],
            "env": [_wire(f"{k}={v}") for k, v in self.env.items()],
            "tty": self.tty,
            "rows": self.rows,
            "cols": self.cols,
            "stdin": self.stdin,
            "timeout_ms": int(self.timeout * 1000) if self.timeout else 0,
            "detach": self.detach,
        }
        if self.main:
            body["main"] = True
        if self.cwd:
            body["cwd"] = _wire(self.cwd)
        if self.user:
            body["user"] = self.user
        return body


TIMEOUT_EXIT = 124


@dataclass(frozen=True)
class ExitStatus:
    code: int | None
    signal: int | None
    timed_out: bool = False

    @property
    def exit_code(self) -> int:
        """Shell convention: the code, or 128+N for a process killed by signal N."""
        if self.code is not None:
            return self.code
        return 128 + (self.signal or 0)

    @property
    def reported_code(self) -> int:
        """What `run` and `exec` report: 124 for a command its timeout killed (as
        timeout(1) does), else exit_code. Every front end uses this one rule."""
        return TIMEOUT_EXIT if self.timed_out else self.exit_code


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AgentError(f"the guest agent sent a bad {what}: {value!r}")
    return value


def _error(frame: Frame) -> tuple[str, str]:
    try:
        body = frame.json()
    except ProtocolError:
        return "protocol", "unreadable error from the guest agent"
    return (untrusted_text(str(body.get("kind", "error")), 64),
            untrusted_text(str(body.get("message", ""))))


def parse_exit(frame: Frame) -> ExitStatus:
    body = frame.json()
    code, sig = body.get("code"), body.get("signal")
    status = ExitStatus(
        None if code is None else _int(code, "exit code"),
        None if sig is None else _int(sig, "signal number"),
        bool(body.get("timed_out", False)),
    )
    if status.code is None and status.signal is None:
        raise AgentError("the guest agent sent an exit status with neither code nor signal")
    return status


def start_exec(channel: Channel, req: ExecRequest, timeout: float = DEFAULT_TIMEOUT) -> tuple[
    Stream, int
]:
    """Send EXEC and wait for STARTED. Returns the stream and the guest pid."""
    stream = channel.stream()
    try:
        stream.send(T.EXEC, req.payload())
        frame = stream.recv(timeout)
        if frame.type == T.ERROR:
            kind, message = _error(frame)
            prog = req.argv[0]
            if kind == "not_found":
                raise ExecFailed(kind, f"{prog}: command not found in the box")
            if kind == "not_executable":
                raise ExecFailed(kind, f"{prog}: cannot be executed in the box ({message})")
            raise ExecFailed(kind, message)
        if frame.type == T.EXIT and req.detach:
            return stream, _int(frame.json().get("pid"), "pid")
        if frame.type != T.STARTED:
            raise AgentError(f"the guest agent answered EXEC with {frame.type.name}")
        return stream, _int(frame.json().get("pid"), "pid")
    except BaseException:
        stream.close()
        raise


def next_event(stream: Stream) -> tuple[T, bytes] | ExitStatus:
    """The next (STDOUT|STDERR, bytes) of an exec stream, or its ExitStatus at the end."""
    frame = stream.recv()
    if frame.type in (T.STDOUT, T.STDERR):
        return frame.type, frame.payload
    if frame.type == T.EXIT:
        return parse_exit(frame)
    if frame.type == T.ERROR:
        kind, message = _error(frame)
        raise AgentError(f"exec failed in the guest ({kind}): {message}")
    raise AgentError(f"unexpected {frame.type.name} frame in an exec stream")


def _expect(stream: Stream, want: T, doing: str, timeout: float) -> Frame:
    """The next frame, which must be `want`; an ERROR becomes an AgentError saying
    what failed (`doing`)."""
    return _check(stream.recv(timeout), want, doing)


def _check(frame: Frame, want: T, doing: str) -> Frame:
    if frame.type == T.ERROR:
        kind, message = _error(frame)
        error = GuestNotFound if kind == "not_found" else GuestRefused
        raise error(f"{doing} failed in the box ({kind}): {message}")
    if frame.type != want:
        raise AgentError(f"{doing}: the guest agent sent {frame.type.name}, not {want.name}")
    return frame


def ping(channel: Channel, payload: bytes = b"ping", timeout: float = DEFAULT_TIMEOUT) -> None:
    stream = channel.stream()
    try:
        # PING travels on its own stream so the reply is routed back to us.
        stream.send(T.PING, payload)
        if _expect(stream, T.PONG, "ping", timeout).payload != payload:
            raise AgentError("the guest agent answered PING with other bytes")
    finally:
        stream.close()


def put_file(channel: Channel, src: IO[bytes], dest: str, mode: int, mkdirs: bool = True,
             timeout: float = DEFAULT_TIMEOUT) -> None:
    stream = channel.stream()
    try:
        stream.send(T.PUT, {"path": _wire(dest), "mode": mode & 0o7777, "mkdirs": mkdirs})
        while chunk := src.read(CHUNK):
            stream.send(T.DATA, chunk)
        stream.send(T.DATA, b"")
        _expect(stream, T.DONE, f"writing {dest}", timeout)
    finally:
        stream.close()


def get_file(channel: Channel, src: str, dest: IO[bytes], max_bytes: int | None = None,
             timeout: float = DEFAULT_TIMEOUT) -> int:
    """Copy a guest file into `dest`; returns its mode. Refuses more than max_bytes."""
    stream = channel.stream()
    doing = f"reading {src}"
    try:
        stream.send(T.GET, {"path": _wire(src)})
        frame = _expect(stream, T.FILE, doing, timeout)
        mode = _int(frame.json().get("mode"), "file mode") & 0o7777
        total = 0
        while data := _expect(stream, T.DATA, doing, timeout).payload:
            total += len(data)
            if max_bytes is not None and total > max_bytes:
                raise AgentError(f"{src} is larger than the {max_bytes}-byte limit")
            dest.write(data)
        return mode
    finally:
        stream.close()


def shutdown(channel: Channel, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Ask the agent to sync and power off; returns once it acknowledged."""
    stream = channel.stream()
    try:
        stream.send(T.SHUTDOWN, {})
        _expect(stream, T.DONE, "shutdown", timeout)
    finally:
        stream.close()
