"""The box shim: any number of clients per box, from any mix of processes; a
client that goes away takes its processes with it; a box that dies under a
running command says so, with the recovery; the shim lives and dies with its box."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import microbox
from microbox.core import shim
from microbox.core.boxdir import box_dir
from microbox.vmm import qmp
from tests.conftest import qemu_pids, shim_pids, still_running
from tests.vm.helpers import mb, spawn

PROCESSES = 8
PER_PROCESS = 8

_WORKER = textwrap.dedent("""
    import sys, threading, microbox
    first, count, TOTAL = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rt = microbox.Runtime()
    box = rt.boxes.get("many")
    results, threads = {}, []
    def one(n):
        # a barrier in the guest: each waits until all 64 have started, so
        # they all ran at once (a queued one would time out, exit 124)
        script = (f"touch /tmp/at/{n}; until [ $(ls /tmp/at | wc -l) -ge {TOTAL} ]; "
                  f"do usleep 20000; done; echo out-{n}; exit {n % 7}")
        r = box.run(["sh", "-c", script], timeout=120)
        results[n] = (r.exit_code, r.stdout)
    for n in range(first, first + count):
        threads.append(threading.Thread(target=one, args=(n,)))
        threads[-1].start()
    for t in threads:
        t.join()
    bad = [n for n, (code, out) in results.items()
           if (code, out) != (n % 7, f"out-{n}\\n".encode())]
    print(len(results), bad)
    box.release()
""")


@pytest.fixture
def many(home: Path) -> Iterator[microbox.Box]:
    with microbox.Runtime() as rt:
        box = rt.boxes.run("busybox", name="many", memory_mib=128)
        try:
            yield box
        finally:
            box.delete(force=True)


def test_sixty_four_execs_from_eight_processes(many: microbox.Box) -> None:
    many.run(["mkdir", "/tmp/at"])
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(p * PER_PROCESS),
                               str(PER_PROCESS), str(PROCESSES * PER_PROCESS)],
                              stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=os.environ.copy())
             for p in range(PROCESSES)]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()
        assert out.decode().split() == [str(PER_PROCESS), "[]"], err.decode()


def test_clients_beyond_the_port_count_wait_for_nothing(many: microbox.Box) -> None:
    execs = [many.exec(["sh", "-c", "read x; echo got-$x"], stdin=True) for _ in range(12)]
    clis = [spawn("exec", "many", "--", "sh", "-c", f"sleep 1; echo cli-{n}")
            for n in range(8)]
    for n, ex in enumerate(execs):
        ex.write(f"{n}\n".encode())
        ex.close_stdin()
    for n, ex in enumerate(execs):
        assert ex.collect().stdout == f"got-{n}\n".encode()
    for n, p in enumerate(clis):
        out, err = p.communicate(timeout=60)
        assert (p.returncode, out) == (0, f"cli-{n}\n".encode()), err


def _connected_ports(box: microbox.Box) -> int:
    """Agent ports with a host connected, as QEMU reports its chardevs."""
    d = box_dir(box.reload().record)
    with qmp.session(d.qmp, d.qmp_lock) as mon:
        return sum(1 for c in mon.execute("query-chardev") if c["label"].startswith("port")
                   and not c["filename"].startswith("disconnected:"))


def test_the_shim_opens_more_ports_only_as_the_box_gets_busy(many: microbox.Box) -> None:
    for _ in range(3):
        assert many.run(["true"]).exit_code == 0
    assert _connected_ports(many) == 1  # one command at a time needs one session
    execs: list[microbox.Execution] = []
    while _connected_ports(many) < 4 and len(execs) < 64:
        execs.append(many.exec(["sh", "-c", "read x; echo got-$x"], stdin=True))
    assert _connected_ports(many) == 4
    for n, ex in enumerate(execs):
        ex.write(f"{n}\n".encode())
        ex.close_stdin()
    for n, ex in enumerate(execs):
        assert ex.collect().stdout == f"got-{n}\n".encode()


def test_a_killed_client_takes_its_process_with_it(many: microbox.Box) -> None:
    p = spawn("exec", "many", "--", "sh", "-c", "echo up; exec sleep 4321")
    assert p.stdout is not None
    assert p.stdout.readline() == b"up\n"
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = many.run(["sh", "-c", "while pgrep -f 'sleep 4321' >/dev/null; do usleep 20000; done; "
                  "echo gone"], timeout=10)
    assert r.stdout == b"gone\n"


def test_a_box_that_dies_under_exec_says_so(many: microbox.Box) -> None:
    p = spawn("exec", "many", "--", "sh", "-c", "echo up; sleep 30")
    assert p.stdout is not None
    assert p.stdout.readline() == b"up\n"
    assert many.record.pid is not None
    os.kill(many.record.pid, signal.SIGKILL)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 1
    assert err == (b"microbox: box 'many' is not running \xe2\x80\x94 its process has exited; "
                   b"run 'microbox delete many' to clear it.\n")
    assert not still_running(shim_pids(Path(os.environ["MICROBOX_HOME"])), 5)


def test_the_shim_lives_and_dies_with_its_box(home: Path) -> None:
    with microbox.Runtime() as rt, rt.boxes.run("busybox", name="sh1", memory_mib=128) as box:
        d = box_dir(box.record)
        first = shim.pid(d)
        assert first is not None and first in shim_pids(home)
        assert box.run(["true"]).exit_code == 0  # this handle now holds a session
        # a shim that is killed is replaced on the next use, even by a handle
        # whose session it carried; the box keeps running
        os.kill(first, signal.SIGKILL)
        assert still_running({first}, 5) == set()
        assert box.run(["echo", "again"]).stdout == b"again\n"
        second = shim.pid(d)
        assert second not in (None, first)
        box.stop()
        assert shim.pid(d) is None and not still_running({second} if second else set(), 1)
    assert qemu_pids(home) == set() and shim_pids(home) == set()


def test_exec_detached_writes_to_the_log(many: microbox.Box) -> None:
    r = mb("exec", "-d", "many", "--", "sh", "-c", "echo from-the-background")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    stop = threading.Event()
    timer = threading.Timer(30, stop.set)
    timer.start()
    seen = b""
    for chunk in many.follow_logs(stop=stop):
        seen += chunk
        if b"from-the-background" in seen:
            break
    timer.cancel()
    assert b"from-the-background" in seen
    r = mb("exec", "-d", "-i", "many", "--", "true")
    assert r.returncode == 2 and b"-d cannot be combined" in r.stderr


def test_gc_ends_a_shim_that_outlived_its_vm(home: Path) -> None:
    with microbox.Runtime() as rt:
        box = rt.boxes.run("busybox", name="stuck", memory_mib=128, rm=False)
        d = box_dir(box.record)
        pid = shim.pid(d)
        assert pid is not None and box.record.pid is not None
        os.kill(pid, signal.SIGSTOP)  # a shim that cannot follow its VM out
        os.kill(box.record.pid, signal.SIGKILL)
        assert not still_running({box.record.pid}, 10)
        doctor = mb("doctor")
        assert b"1 box shims outlived their VM: pid " + str(pid).encode() in doctor.stdout
        r = mb("gc")
        assert r.returncode == 0 and f"ended shim pid {pid}".encode() in r.stdout, r
        assert not still_running({pid}, 5)
        box.delete(force=True)


def test_a_client_that_stops_reading_stalls_nobody_else(many: microbox.Box) -> None:
    with microbox.Runtime() as rt:
        stalled = rt.boxes.get("many")
        flood = stalled.exec(["cat", "/dev/zero"])  # never read: fills every buffer there is
        try:
            for n in range(5):  # through the CLI: a stall fails its timeout, not hangs
                r = mb("exec", "many", "--", "echo", f"still-{n}", timeout=60)
                assert r.stdout == f"still-{n}\n".encode()
            cli = mb("exec", "many", "--", "sh", "-c", "head -c 3000000 /dev/zero | wc -c")
            assert cli.stdout.strip() == b"3000000"
        finally:
            flood.kill()
            stalled.release()


def _hwm_kib(status: str) -> int:
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


def test_two_hundred_mb_of_stdout_in_bounded_memory(many: microbox.Box) -> None:
    mib = 200
    p = spawn("exec", "many", "--", "dd", "if=/dev/zero", "bs=64k", f"count={mib * 16}")
    assert p.stdout is not None
    got = cli_peak = 0
    status_file = Path(f"/proc/{p.pid}/status")
    while chunk := p.stdout.read(1 << 20):
        got += len(chunk)
        # VmHWM is the high-water mark of the CLI's own memory (ru_maxrss is not:
        # it keeps the peak of the forking test process from before the exec)
        with contextlib.suppress(OSError, StopIteration):
            cli_peak = _hwm_kib(status_file.read_text())
    assert p.wait() == 0 and got == mib << 20
    assert 0 < cli_peak < 100 * 1024, f"the CLI peaked at {cli_peak} KiB"
    shim_pid = shim.pid(box_dir(many.record))
    assert shim_pid is not None
    shim_peak = _hwm_kib(Path(f"/proc/{shim_pid}/status").read_text())
    assert shim_peak < 32 * 1024, f"the shim peaked at {shim_peak} KiB"
    agent = many.run(["cat", "/proc/1/status"]).stdout.decode()
    assert _hwm_kib(agent) < 32 * 1024, f"the agent peaked at {_hwm_kib(agent)} KiB"
