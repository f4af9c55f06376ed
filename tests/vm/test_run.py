"""`microbox run` on real QEMU boxes: one test per exit path, exact exit codes,
and nothing left behind (the leak guard checks every test)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from microbox.core import lifecycle
from microbox.core.boxdir import box_dir
from microbox.core.vm import default_kernel
from microbox.store import boxes
from microbox.store.db import Database
from microbox.vmm import accel
from tests.conftest import qemu_pids, still_running
from tests.vm.helpers import CLI, mb, mb_tty, spawn


def test_stdout_stderr_and_exit_code() -> None:
    r = mb("run", "--rm", "busybox", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, b"out\n", b"err\n")


def test_zero_exit() -> None:
    r = mb("run", "--rm", "busybox", "--", "true")
    assert r.returncode == 0, r.stderr


def test_killed_by_signal_gives_128_plus_n() -> None:
    r = mb("run", "--rm", "busybox", "--", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 143, r.stderr


def test_command_not_found_is_127_with_one_line() -> None:
    r = mb("run", "--rm", "busybox", "--", "/nonexistent")
    assert r.returncode == 127
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "/nonexistent" in lines[0]


def test_not_executable_is_126() -> None:
    r = mb("run", "--rm", "busybox", "--", "/etc/passwd")
    assert r.returncode == 126, r.stderr


def test_stdin_is_forwarded_with_i() -> None:
    r = mb("run", "--rm", "-i", "busybox", "--", "cat", input=b"hello\n")
    assert (r.returncode, r.stdout) == (0, b"hello\n")


def test_without_i_stdin_is_empty() -> None:
    r = mb("run", "--rm", "busybox", "--", "cat", input=b"ignored\n")
    assert (r.returncode, r.stdout) == (0, b"")


def test_arguments_arrive_byte_for_byte() -> None:
    args = ["a b", "", "$HOME", "'q'", '"d"', "*", "tab\there", "ünï"]
    r = mb("run", "--rm", "busybox", "--", "printf", "[%s]\\n", *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == "".join(f"[{a}]\n" for a in args)
    # Bytes that are not UTF-8, in an argument and in -e, arrive as they were.
    raw = subprocess.run([*CLI, "run", "--rm", "-e", b"V=\x80\xfe", "busybox", "--", "sh", "-c",
                          'printf "[%s][%s]" "$1" "$V"', "sh", b"\xffA\xc3"],
                         capture_output=True, timeout=120)
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == b"[\xffA\xc3][\x80\xfe]"


def test_env_workdir_user() -> None:
    r = mb("run", "--rm", "-e", "GREETING=hi there", "-w", "/tmp", "-u", "nobody", "busybox",
           "--", "sh", "-c", 'echo "$GREETING"; pwd; id -u')
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == ["hi there", "/tmp", "65534"]


def test_timeout_kills_the_command() -> None:
    r = mb("run", "--rm", "--timeout", "1", "busybox", "--", "sleep", "100")
    assert r.returncode == 124
    assert b"timed out" in r.stderr


def test_tty_without_terminal_is_a_usage_error() -> None:
    with open(os.devnull, "rb") as devnull:
        r = mb("run", "--rm", "-t", "busybox", "--", "true", stdin=devnull)
    assert r.returncode == 2
    assert b"not a TTY" in r.stderr


def test_invalid_spec_fails_before_anything_is_made(home: Path) -> None:
    r = mb("run", "--rm", "--memory", "1", "busybox", "--", "true")
    assert r.returncode == 2 and b"--memory" in r.stderr
    r = mb("run", "--rm", "nosuchimage", "--", "true")
    assert r.returncode == 1 and b"nosuchimage" in r.stderr
    r = mb("create", "--name", "../escape", "busybox")
    assert r.returncode == 2 and r.stderr.count(b"\n") == 1 and b"bad box name" in r.stderr
    assert not (home / "boxes").exists() or not any((home / "boxes").iterdir())


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_cli_is_forwarded_and_box_removed(sig: int, code: int) -> None:
    p = spawn("run", "--rm", "busybox", "--", "sh", "-c", "echo ready; sleep 100")
    assert p.stdout is not None
    assert p.stdout.readline() == b"ready\n"
    p.send_signal(sig)
    assert p.wait(timeout=60) == code


def test_sigkill_of_cli_kills_the_vm_and_gc_reaps_it(home: Path) -> None:
    before = qemu_pids(home)
    p = spawn("run", "--rm", "busybox", "--", "sh", "-c", "echo ready; sleep 100")
    assert p.stdout is not None
    assert p.stdout.readline() == b"ready\n"
    vm = qemu_pids(home) - before
    assert len(vm) == 1
    p.kill()
    p.wait()
    assert not still_running(vm, 10), "the VM outlived its SIGKILLed owner"
    db = Database(home / "microbox.db")
    try:
        (leftover,) = [b for b in boxes.all_boxes(db) if b.auto_remove]
        assert not box_dir(leftover).alive()
    finally:
        db.close()
    r = mb("gc", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["data"]["rows"] == [leftover.id]
    assert not box_dir(leftover).exists()


def test_run_without_rm_keeps_a_stopped_box_with_its_data() -> None:
    r = mb("run", "--name", "keeper", "busybox", "--", "sh", "-c", "echo kept > /root/f")
    assert r.returncode == 0, r.stderr
    body = json.loads(mb("inspect", "--json", "keeper").stdout)
    assert body["data"]["status"] == "stopped"
    assert mb("start", "keeper").returncode == 0
    assert mb("exec", "keeper", "--", "cat", "/root/f").stdout == b"kept\n"
    assert mb("delete", "-f", "keeper").returncode == 0


def test_detached_box_outlives_the_cli(home: Path) -> None:
    r = mb("run", "-d", "--name", "bg", "busybox")
    assert r.returncode == 0, r.stderr
    box_id = r.stdout.decode().strip()
    db = Database(home / "microbox.db")
    try:
        record = boxes.resolve(db, box_id)
        # the CLI has exited; the VM is still up and answers
        assert record.name == "bg" and record.status == "running"
        assert box_dir(record).alive()
        lifecycle.destroy(db, record)
    finally:
        db.close()


def test_tty_gives_a_real_pty() -> None:
    r = mb_tty("run", "--rm", "-t", "busybox", "--", "sh", "-c", "tty; echo $TERM", answer=b"")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().split()
    assert lines[0].startswith("/dev/pts/") and lines[1] == "xterm"


def test_json_run_collects_output() -> None:
    r = mb("run", "--json", "--rm", "busybox", "--", "sh", "-c", "echo a; echo b >&2; exit 3")
    body = json.loads(r.stdout)
    assert r.returncode == 3 and body["exit_code"] == 3
    assert (body["data"]["stdout"], body["data"]["stderr"]) == ("a\n", "b\n")


def test_verbose_says_which_accelerator_and_why() -> None:
    r = mb("run", "--verbose", "--rm", "busybox", "--", "true")
    assert r.returncode == 0
    line = next(ln for ln in r.stderr.decode().splitlines() if "accelerator:" in ln)
    assert "tcg (" in line or "kvm (" in line


def test_auto_accelerator_answers_within_5_seconds_and_a_box_boots(tmp_path: Path) -> None:
    """What holds on every host, whatever its KVM does (tests/unit/test_accel.py covers
    each case): an uncached `auto` decides within 5 s, and a box boots on its choice."""
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu is not None
    started = time.monotonic()
    choice = accel.choose("auto", qemu, default_kernel(), cache_dir=tmp_path)
    assert time.monotonic() - started < 5, choice
    assert choice.accel in ("kvm", "tcg") and "(cached)" not in choice.reason
    r = mb("run", "--rm", "--accel", choice.accel, "busybox", "--", "echo", "booted")
    assert (r.returncode, r.stdout) == (0, b"booted\n"), r.stderr
