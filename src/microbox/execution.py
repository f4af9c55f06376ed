"""A process running in a box, and the result of one that ran to completion."""

from __future__ import annotations

import contextlib
import signal as _signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from microbox.agent import ops
from microbox.agent.channel import Stream
from microbox.agent.ops import ExitStatus
from microbox.agent.protocol import CHUNK, T
from microbox.errors import AgentError


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: bytes
    stderr: bytes
    status: ExitStatus
    stdout_dropped: int = 0  # bytes past collect()'s limit, counted and discarded
    stderr_dropped: int = 0

    @property
    def truncated(self) -> bool:
        return bool(self.stdout_dropped or self.stderr_dropped)


class Execution:
    """A process running in a box: stream its output, feed its stdin, signal it.

    Safe to use from two threads at once (one reading events, one writing stdin
    or signalling); `kill()` ends the whole process group in the guest.
    """

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
        """Signal the process group (with a TTY, its foreground group)."""
        self._stream.send(T.SIGNAL, {"signal": int(sig)})

    def kill(self) -> None:
        """SIGKILL the process group; a process that already exited is fine."""
        if self.status is None:
            with contextlib.suppress(AgentError):
                self.signal(_signal.SIGKILL)

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

    def collect(self, input: bytes | None = None, limit: int | None = None) -> Result:
        """Feed `input` (if any) and gather all output until the exit. With a
        limit, keep the first `limit` bytes of each stream and count the rest
        (Result.stdout_dropped, stderr_dropped)."""
        feeder = None
        if input is not None:
            # fed from a thread: a large input and a large output cannot wait on each other
            feeder = threading.Thread(target=_feed, args=(self, input), daemon=True)
            feeder.start()
        kept = {"stdout": bytearray(), "stderr": bytearray()}
        dropped = {"stdout": 0, "stderr": 0}
        for name, data in self.events():
            buf = kept[name]
            room = len(data) if limit is None else max(0, min(len(data), limit - len(buf)))
            buf.extend(data[:room])
            dropped[name] += len(data) - room
        if feeder is not None:
            feeder.join()
        assert self.status is not None
        return Result(self.status.exit_code, bytes(kept["stdout"]), bytes(kept["stderr"]),
                      self.status, dropped["stdout"], dropped["stderr"])


def _feed(ex: Execution, data: bytes) -> None:
    with contextlib.suppress(AgentError):  # the process may exit before reading it all
        ex.write(data)
        ex.close_stdin()
