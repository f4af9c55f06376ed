"""Lifecycle commands on real boxes: state, persistence, crash detection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from microbox.core.orphans import scan
from tests.vm.conftest import wait_for
from tests.vm.helpers import CLI, mb, spawn


def js(*args: str) -> Any:
    r = mb(*args, "--json")
    body = json.loads(r.stdout)
    assert body["exit_code"] == r.returncode
    return body


def test_create_start_exec_stop_start_keeps_data() -> None:
    assert mb("create", "--name", "life", "busybox").returncode == 0
    assert js("inspect", "life")["data"]["status"] == "created"
    assert mb("start", "life").returncode == 0
    r = mb("exec", "life", "--", "sh", "-c", "echo persisted > /root/f; hostname")
    assert (r.returncode, r.stdout) == (0, b"life\n"), r.stderr
    assert mb("stop", "life").returncode == 0
    assert js("inspect", "life")["data"]["status"] == "stopped"
    r = mb("exec", "life", "--", "true")
    assert r.returncode == 1
    assert r.stderr == b"microbox: box 'life' is not running; run 'microbox start life'.\n"
    assert mb("restart", "life").returncode == 0
    assert mb("exec", "life", "--", "cat", "/root/f").stdout == b"persisted\n"
    r = mb("delete", "life")
    assert r.returncode == 1 and b"microbox delete -f life" in r.stderr
    assert mb("delete", "-f", "life").returncode == 0
    assert js("list", "--all")["data"] == []


# What `microbox exec` must not load: booting VMs, networks, images, snapshots,
# copies, workspaces. Each costs the command's start-up time (imports).
NOT_FOR_EXEC = ("microbox.core.lifecycle", "microbox.core.vm", "microbox.core.snapshots",
                "microbox.core.templates", "microbox.images.filestore", "microbox.net.tap",
                "microbox.artifacts.gobuild", "microbox.cp.transfer",
                "microbox.workspace.guest", "tarfile", "concurrent.futures")


def test_exec_loads_only_what_a_session_needs() -> None:
    """`microbox exec` on a running box imports no module of starting one, none
    of images, snapshots, copies or workspaces (PYTHONPROFILEIMPORTTIME lists
    every module the command imported, at any time)."""
    assert mb("run", "-d", "--name", "lean", "busybox", "--", "sleep", "600").returncode == 0
    try:
        r = subprocess.run([*CLI, "exec", "lean", "--", "echo", "hi"], capture_output=True,
                           timeout=60, env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
        assert (r.returncode, r.stdout) == (0, b"hi\n"), r.stderr[-2000:]
        loaded = {line.split("|")[-1].strip() for line in r.stderr.decode().splitlines()
                  if line.startswith("import time:")}
        assert "microbox.core.shim" in loaded  # the listing is real
        assert not loaded & set(NOT_FOR_EXEC), sorted(loaded & set(NOT_FOR_EXEC))
    finally:
        assert mb("delete", "-f", "lean").returncode == 0


def test_set_applies_at_next_start() -> None:
    assert mb("create", "--start", "--name", "res", "busybox").returncode == 0
    r = mb("set", "res", "--cpus", "2")
    assert r.returncode == 1 and b"microbox stop res" in r.stderr
    assert mb("stop", "res").returncode == 0
    assert mb("set", "res", "--cpus", "2", "--memory", "192").returncode == 0
    assert mb("set", "res", "--memory", "1").returncode == 2
    assert mb("start", "res").returncode == 0
    r = mb("exec", "res", "--", "sh", "-c", "nproc; grep MemTotal /proc/meminfo")
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "2"
    assert 150_000 < int(lines[1].split()[1]) < 196_608
    assert mb("delete", "-f", "res").returncode == 0


def test_pause_and_resume() -> None:
    assert mb("create", "--start", "--name", "pz", "busybox").returncode == 0
    assert mb("pause", "pz").returncode == 0
    assert js("list")["data"][0]["status"] == "paused"
    r = mb("exec", "pz", "--", "true")
    assert r.stderr == b"microbox: box 'pz' is paused; run 'microbox resume pz'.\n"
    assert mb("resume", "pz").returncode == 0
    assert mb("exec", "pz", "--", "true").returncode == 0
    r = mb("resume", "pz")
    assert r.returncode == 1 and b"not paused" in r.stderr
    assert mb("pause", "pz").returncode == 0
    assert mb("stop", "pz").returncode == 0  # a paused box stops too
    assert mb("delete", "pz").returncode == 0


def _start_and_crash(name: str) -> int:
    assert mb("create", "--start", "--name", name, "busybox").returncode == 0
    pid = js("inspect", name)["data"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(v.pid == pid for v in scan()), 10, "the VMM to die")
    return int(pid)


def test_crashed_box_is_error_and_every_action_names_the_way_out() -> None:
    _start_and_crash("cr")
    listed = js("list")["data"]
    assert [(b["name"], b["status"]) for b in listed] == [("cr", "error")]
    sentence = (b"microbox: box 'cr' is not running \xe2\x80\x94 its process has exited; "
                b"run 'microbox delete cr' to clear it.\n")
    for action in (["exec", "cr", "--", "true"], ["pause", "cr"], ["resume", "cr"],
                   ["stop", "cr"]):
        r = mb(*action)
        assert (r.returncode, r.stderr) == (1, sentence), action
    body = js("pause", "cr")
    assert body["error"]["type"] == "state" and body["error"]["recovery"] == "microbox delete cr"
    assert mb("delete", "cr").returncode == 0


def test_cleanup_removes_crashed_boxes() -> None:
    _start_and_crash("cr2")
    r = mb("cleanup", "--force")
    assert r.returncode == 0 and b"cr2" in r.stderr
    assert js("list", "--all")["data"] == []


def test_sigkill_of_cli_mid_create_leaves_nothing(home: Path) -> None:
    p = spawn("create", "--start", "--name", "midway", "busybox")
    wait_for(lambda: any(True for _ in scan()), 60, "the VMM to appear")
    p.kill()
    p.wait()
    assert js("list", "--all")["data"] == []  # reconcile rolled the create back
    assert scan() == []
    assert not (home / "boxes").exists() or list((home / "boxes").iterdir()) == []


def test_logs_show_the_console(home: Path) -> None:
    r = mb("run", "-d", "--name", "lg", "busybox", "--", "sh", "-c",
           "echo hello-console; exec sleep 1000")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: b"hello-console" in mb("logs", "lg").stdout, 30, "the console line")
    assert mb("logs", "--tail", "1", "lg").stdout.strip().endswith(b"hello-console")
    assert mb("delete", "-f", "lg").returncode == 0


def test_logs_follow_ends_when_the_box_stops_and_exec_json() -> None:
    assert mb("create", "--start", "--name", "lf", "busybox").returncode == 0
    follower = spawn("logs", "-f", "lf")
    r = mb("exec", "--json", "lf", "--", "sh", "-c", "echo to-console > /dev/console; echo x")
    body = json.loads(r.stdout)
    assert (r.returncode, body["data"]["stdout"]) == (0, "x\n")
    assert mb("stop", "lf").returncode == 0
    out, _ = follower.communicate(timeout=30)
    assert follower.returncode == 0 and b"to-console" in out
    assert mb("delete", "lf").returncode == 0


def test_vm_that_dies_at_once_leaves_nothing(tmp_path: Path, home: Path) -> None:
    bogus = tmp_path / "vmlinux"
    bogus.write_bytes(b"not a kernel")
    r = mb("create", "--start", "--name", "dud", "--kernel", str(bogus), "busybox")
    assert r.returncode == 1
    assert b"the VM exited during boot" in r.stderr
    assert len(r.stderr.decode().strip().splitlines()) == 1
    assert js("list", "--all")["data"] == []
    assert not (home / "boxes").exists() or list((home / "boxes").iterdir()) == []
    r = mb("run", "--rm", "--kernel", str(bogus), "busybox", "--", "true")
    assert r.returncode == 1 and js("list", "--all")["data"] == []


def test_detached_box_lives_as_long_as_its_command() -> None:
    r = mb("run", "-d", "--name", "job", "busybox", "--", "sh", "-c", "echo working; exit 3")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: js("inspect", "job")["data"]["status"] != "running", 60,
             "the box to end with its command")
    assert js("inspect", "job")["data"]["status"] == "stopped"  # not "error": it ended cleanly
    log = mb("logs", "job").stdout
    assert b"working" in log and b"main process exited: code=3" in log
    assert mb("start", "job").returncode == 0  # a stopped box starts again, idle
    assert mb("exec", "job", "--", "true").returncode == 0
    assert mb("delete", "-f", "job").returncode == 0


def test_detached_rm_box_is_removed_when_its_command_ends() -> None:
    r = mb("run", "-d", "--rm", "--name", "oneshot", "busybox", "--", "true")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: js("list", "--all")["data"] == [], 60, "the --rm box to go away")
    assert scan() == []
