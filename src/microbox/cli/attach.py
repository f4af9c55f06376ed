"""Attaching a terminal to an execution: output, stdin, signals, window size."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from types import FrameType

from microbox.agent.ops import ExitStatus
from microbox.cli.output import Out, envelope
from microbox.errors import ExecFailed, MicroboxError
from microbox.sdk import Box, Execution

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class Interrupted(BaseException):
    """The user insisted (a second signal): stop waiting for the guest."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_abort() -> Iterator[None]:
    """While booting, SIGTERM/SIGHUP unwind like Ctrl-C, so teardown code runs."""
    old = {s: signal.signal(s, _raise_interrupted) for s in FORWARDED}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def ignore_signals() -> None:
    """Teardown must finish: later signals are ignored."""
    for s in FORWARDED:
        signal.signal(s, signal.SIG_IGN)


def terminal_size() -> tuple[int, int]:
    size = shutil.get_terminal_size((80, 24))
    return size.lines, size.columns


def _pump_stdin(ex: Execution) -> None:
    try:
        while data := os.read(0, 65536):
            ex.write(data)
        ex.close_stdin()
    except (OSError, MicroboxError):
        pass  # the process or the box is gone; nothing left to feed


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def attach(ex: Execution, *, stdin: bool, use_tty: bool,
           sink: Callable[[str, bytes], None] | None = None) -> ExitStatus:
    """Stream output (to our stdout/stderr, or to `sink`) until the process exits.
    The first INT/TERM/HUP/QUIT is forwarded to the guest process; a second
    one raises Interrupted."""
    forwarded: set[int] = set()

    def forward(signum: int, _frame: FrameType | None) -> None:
        if signum in forwarded:
            raise Interrupted(signum)
        forwarded.add(signum)
        with contextlib.suppress(MicroboxError):
            ex.signal(signum)

    old = {s: signal.signal(s, forward) for s in FORWARDED}
    if use_tty:
        old[signal.SIGWINCH] = signal.signal(
            signal.SIGWINCH, lambda *_: ex.resize(*terminal_size()))
    saved = termios.tcgetattr(0) if use_tty else None
    try:
        if saved is not None:
            tty.setraw(0)
        if stdin:
            threading.Thread(target=_pump_stdin, args=(ex,), daemon=True).start()
        out, err = sys.stdout.fileno(), sys.stderr.fileno()
        for name, data in ex.events():
            if sink is not None:
                sink(name, data)
            else:
                _write(out if name == "stdout" else err, data)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        for s, h in old.items():
            signal.signal(s, h)
    assert ex.status is not None
    return ex.status


def complete(out: Out, ex: Execution, *, stdin: bool, use_tty: bool,
             timeout: float | None) -> int:
    """Attach until the process exits and return the exit code to leave with.
    With --json, the output is collected into one envelope instead of streamed."""
    captured: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
    sink = (lambda name, data: captured[name].extend(data)) if out.as_json else None
    status = attach(ex, stdin=stdin, use_tty=use_tty, sink=sink)
    code = status.reported_code
    if out.as_json:
        envelope(out.command, code, {
            "exit_code": code, "signal": status.signal, "timed_out": status.timed_out,
            "stdout": captured["stdout"].decode(errors="replace"),
            "stderr": captured["stderr"].decode(errors="replace"),
        })
    elif status.timed_out:
        print(f"microbox: the command timed out after {timeout:g} s", file=sys.stderr)
    return code


def exec_attached(out: Out, box: Box, argv: list[str], *, env: dict[str, str] | None = None,
                  cwd: str | None = None, user: str | None = None, stdin: bool,
                  use_tty: bool, timeout: float | None) -> int:
    """Start `argv` in `box` and attach to it; returns the exit code to leave with."""
    rows, cols = terminal_size()
    try:
        ex = box.exec(argv, env=env, cwd=cwd, user=user, stdin=stdin, tty=use_tty, rows=rows,
                      cols=cols, timeout=timeout)
    except ExecFailed as exc:
        return out.fail(exc)
    try:
        return complete(out, ex, stdin=stdin, use_tty=use_tty, timeout=timeout)
    except Interrupted as sig:
        return 128 + sig.signum
