"""A randomized fault sweep (issue 23): kill things at random moments, then count
what is left.

    PYTHONPATH=src .venv/bin/python bench/faults.py SEED RUNS [--kinds k1,k2] [--home DIR]
                                                   [--no-calibrate]

Run N takes kind N mod the number of kinds (`faults.py 1 17`: one run of
each), in a fresh MICROBOX_HOME under a temp dir (~/.cache/microbox, with the
kernel and agent, is shared). It sets up what the kind needs, starts the
operation, and kills the target at a moment drawn from
random.Random(f"{SEED}/{N}"), uniform over a window that covers the
operation: 1.15 times its duration in one undisturbed control run of each
kind at start-up (whose findings are printed, not counted), or a built-in
window with --no-calibrate. The kinds:

  fork snapshot restore pool-add cp-in cp-out run-d first-run
      SIGKILL of that CLI command (`fork src -n 3`, `snapshot create`,
      `snapshot restore`, `pool add busybox -n 1`, `cp` of 50 MB either way,
      `run -d`, the first `run --rm` of a home: image build and template)
  filler      SIGKILL of a pool's filler (python -c "...pool.main()" POOL) a run started
  shim qemu   SIGKILL of src's shim or VMM during `exec src -- sleep 1`
  serve       SIGKILL of `serve --socket` during POST /boxes
  mcp         SIGKILL of `mcp` (the MCP SDK's stdio client) during create_box + fork_box
  rm-run      SIGKILL of an attached `run --rm -p PORT:80 ... sleep 1`
  rm-pooled   a pooled `run --rm` SIGSTOPped, its shim SIGKILLed, then the run
  full-disk   `snapshot create` onto a tmpfs over snapshots/ of a random size
  template    a template file (disk.qcow2, state, mem) overwritten or cut
              short, each in turn; the next warm `run --rm` must boot cold

Then the user's own commands settle, and their failures are findings:
`ls -a`; in each running box a QMP `query-status` (not `running` while the
database says running: "frozen box") and `exec BOX -- true` (a hang past 10 s:
"frozen box"); what that user would do next (retry `pool add`, `run --rm`,
look at the copied file); `gc`; `doctor` (a FAIL). An error whose --json
envelope has no `recovery` and whose message names no next step is "error
without recovery". A box attached to a killed process (`run --rm`, an MCP
server's) whose VMM still runs 3 s later, before any command, "outlived its
owner"; one still listed after `ls` and `gc` is "left". A box the user made
and never removed that is gone is "lost"; a pool below its size 20 s after
the user's next run is "short". Then `cleanup --all -f`, `pool rm` and `gc`,
and everything left is counted: VMMs, shims, fillers and other processes of
the home, database rows, box dirs, temp files (`.tmp-*`, `*.tmp`,
`*microbox-tmp*`, image staging, dot files in the copy destination), --net tap
pieces of its boxes, host ports it published, fork snapshots.

One line per run (seed, run, kind, kill moment, findings; their details
below it), then a table by kind and `FOUND N`. The exit code is 0 for a
completed sweep: it is a measurement. The sweep kills only processes it
started or that belong to its own homes (checked through a pidfd), bounds
every wait, unmounts what it mounted and removes its homes; anything of
them still running at the very end is killed and reported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "microbox"]
MiB = 1 << 20
BIG = 50 * MiB  # the files cp copies
SETTLE = 10.0  # seconds a `exec BOX -- true` may take before the box counts as frozen
GONE_WAIT = 8.0  # seconds processes get to exit after cleanup before they are counted
# An error's message that already names the next step (a command, an option to
# change) needs no recovery field; one that names none is a finding.
NEXT_STEP = re.compile(r"microbox [a-z]|; (use|give|run|try|publish|drop|delete|"
                       r"remove|start|stop|free|wait|pass|check|mkdir)\b", re.I)


# -- processes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    argv: list[str]
    home: str | None  # its MICROBOX_HOME


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _proc(pid: int) -> Proc | None:
    argv = [a.decode(errors="replace") for a in _read(f"/proc/{pid}/cmdline").split(b"\0") if a]
    if not argv:
        return None
    home = None
    for var in _read(f"/proc/{pid}/environ").split(b"\0"):
        if var.startswith(b"MICROBOX_HOME="):
            home = var[len("MICROBOX_HOME="):].decode(errors="replace")
    return Proc(pid, argv, home)


def processes(argv_has: str | None = None) -> list[Proc]:
    """Every live process but this one (zombies are dead); with `argv_has`, only
    those with it in a word of their command line."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        if argv_has is not None and argv_has.encode() not in _read(f"/proc/{entry}/cmdline"):
            continue
        stat = _read(f"/proc/{entry}/stat")
        if not stat or stat[stat.rfind(b")") + 2:][:1] in (b"Z", b"X"):
            continue
        p = _proc(int(entry))
        if p is not None:
            found.append(p)
    return found


def classify(p: Proc) -> str:
    if "qemu-system" in p.argv[0]:
        return "qemu"
    if p.argv[0].endswith("microbox-shim"):
        return "shim"
    if any("pool.main()" in a for a in p.argv):
        return "filler"
    return "process"


def belongs(p: Proc, home: Path) -> bool:
    """`p` is of `home`: its command line names a path under it, or it runs with it
    as MICROBOX_HOME."""
    under = str(home) + "/"
    return p.home == str(home) or any(under in a for a in p.argv)


def of_home(home: Path) -> dict[str, list[Proc]]:
    """The processes of `home`, by kind: qemu, shim, filler, process."""
    found: dict[str, list[Proc]] = {}
    for p in processes():
        if belongs(p, home):
            found.setdefault(classify(p), []).append(p)
    return found


def kill_verified(pid: int, check: Callable[[Proc], bool], sig: int = signal.SIGKILL) -> bool:
    """Send `sig` to `pid` only if it is still the process `check` accepts (a
    pidfd pins it while its command line is read again: no reused pid is hit)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        p = _proc(pid)
        if p is None or not check(p):
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


# -- one run -----------------------------------------------------------------------


@dataclass
class Done:
    """A finished (or timed out) CLI command."""

    args: tuple[str, ...]
    rc: int | None  # None: it hung and was killed
    out: str
    err: str
    secs: float

    @property
    def env(self) -> dict[str, Any] | None:
        """Its --json envelope."""
        for line in reversed(self.out.splitlines()):
            with contextlib.suppress(ValueError):
                body = json.loads(line)
                if isinstance(body, dict) and "ok" in body:
                    return body
        return None

    def data(self) -> Any:
        env = self.env
        return env.get("data") if env and env.get("ok") else None

    def said(self) -> str:
        env = self.env
        if env and env.get("error"):
            e = env["error"]
            return f"{e.get('type')}: {e.get('message')} (recovery: {e.get('recovery')})"
        text = (self.err.strip() or self.out.strip()).splitlines()
        return text[-1][:300] if text else f"exit {self.rc}"


@dataclass
class Run:
    seed: int
    index: int  # -1: a calibration (control) run
    kind: str
    root: Path
    window: float  # seconds the kill moment is drawn over
    nth: int = 0  # how many runs of its kind came before it
    calibrating: bool = False
    findings: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    moment: str = ""
    keep: set[str] = field(default_factory=set)  # the user's boxes: must not be lost
    rm: set[str] = field(default_factory=set)  # --rm boxes: must be gone
    ports: list[int] = field(default_factory=list)
    mounts: list[Path] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)  # box ids seen
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    measured: float = 0.0  # the operation's duration (calibration)
    size_needed: int = 0  # full-disk: bytes a snapshot took (calibration)
    home: Path = field(init=False)
    work: Path = field(init=False)  # its scratch: command output, cp's files, sockets
    rng: random.Random = field(init=False)
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        tag = "c" if self.index < 0 else ""
        n = self.index if self.index >= 0 else KINDS.index(self.kind)
        self.home = self.root / f"{tag}h{n}"
        self.work = self.root / f"{tag}w{n}"
        self.home.mkdir(mode=0o700)
        self.work.mkdir(mode=0o700)
        self.rng = random.Random(f"{self.seed}/{self.index}")
        self.env = {**os.environ, "MICROBOX_HOME": str(self.home)}
        self.env.pop("MICROBOX_FAILPOINT", None)
        self._seq = 0

    def find(self, kind: str, detail: str) -> None:
        if (kind, detail) not in self.findings:
            self.findings.append((kind, detail))

    # CLI commands, their output in files (a VMM that inherits a pipe would hold
    # communicate() for its whole life)
    def spawn(self, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        self._seq += 1
        out = self.work / f"cmd{self._seq}"
        with open(out.with_suffix(".out"), "wb") as o, open(out.with_suffix(".err"), "wb") as e:
            p = subprocess.Popen([*CLI, *args], stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                                 env=self.env)
        self.started.append(p)
        return p, out

    @staticmethod
    def collect(p: subprocess.Popen[bytes], out: Path, args: tuple[str, ...],
                start: float) -> Done:
        return Done(args, p.returncode, out.with_suffix(".out").read_text(errors="replace"),
                    out.with_suffix(".err").read_text(errors="replace"),
                    time.monotonic() - start)

    def mb(self, *args: str, timeout: float = 60) -> Done:
        start = time.monotonic()
        p, out = self.spawn(*args)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
            done = self.collect(p, out, args, start)
            done.rc = None
            return done
        return self.collect(p, out, args, start)

    def must(self, *args: str, timeout: float = 120) -> Done:
        """A setup step: failing it ends the run (counted as a harness error)."""
        done = self.mb(*args, timeout=timeout)
        if done.rc != 0:
            raise SetupFailed(f"microbox {' '.join(args)}: {done.said()}")
        return done

    def draw(self) -> float:
        u = self.rng.random()
        at = u * self.window
        self.moment = f"{at:.3f}s ({u:.2f} of {self.window:.2f}s)"
        return at

    def kill_cli_at(self, args: tuple[str, ...]) -> Done | None:
        """Start `microbox ARGS`; SIGKILL it at the drawn moment (calibrating:
        let it finish and measure it). The Done if it ended by itself."""
        start = time.monotonic()
        p, out = self.spawn(*args)
        if self.calibrating:
            p.wait(120)
            self.measured = time.monotonic() - start
            return self.collect(p, out, args, start)
        at = start + self.draw()
        while time.monotonic() < at and p.poll() is None:
            time.sleep(0.002)
        if p.poll() is None:
            p.kill()
            p.wait(10)
            self.moment += " killed"
            return None
        self.moment += f" (it had ended, exit {p.returncode})"
        return self.collect(p, out, args, start)


class SetupFailed(Exception):
    pass


# -- checks ------------------------------------------------------------------------


def check_error(r: Run, what: str, done: Done) -> None:
    """A failed command's envelope should say how to recover."""
    env = done.env
    if done.rc is None:
        r.find("hang", f"{what} did not end within {done.secs:.0f}s")
        return
    if done.rc == 0:
        return
    if env is None or not env.get("error"):
        r.find("error without envelope", f"{what}: exit {done.rc}: {done.said()}")
        return
    err = env["error"]
    if err.get("recovery") is None and not NEXT_STEP.search(str(err.get("message"))):
        r.find("error without recovery", f"{what}: {err.get('type')}: {err.get('message')}")


def qmp_status(box_dir: Path, timeout: float = 5.0) -> str:
    """The VMM's run state over QMP (`running`, `paused`, `postmigrate`...), with
    the box's QMP lock held as microbox's own clients do."""
    import fcntl

    lock = os.open(box_dir / "qmp.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if not wait_for(lambda: _try_flock(lock, fcntl), 3.0, 0.05):
            return "QMP lock held by another process"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(box_dir / "qmp.sock"))
            f = s.makefile("rwb")
            f.readline()  # greeting
            for cmd in ("qmp_capabilities", "query-status"):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                while True:
                    line = f.readline()
                    if not line:
                        return "QMP closed"
                    msg = json.loads(line)
                    if "return" in msg or "error" in msg:
                        break
            return str(msg.get("return", {}).get("status", msg))
    except (OSError, ValueError) as exc:
        return f"QMP failed: {exc}"
    finally:
        os.close(lock)


def _try_flock(fd: int, fcntl: Any) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def listed(r: Run, what: str) -> list[dict[str, Any]] | None:
    done = r.mb("ls", "-a", "--json", timeout=30)
    check_error(r, what, done)
    data = done.data()
    if not isinstance(data, list):
        return None
    for b in data:
        r.ids.add(b["id"])
    return data


def check_boxes(r: Run) -> list[dict[str, Any]]:
    """`ls -a`, then every running box: QMP says running, `exec -- true` answers."""
    boxes = listed(r, "ls -a") or []
    for b in boxes:
        name = b["name"]
        if b["status"] not in ("running", "paused") and name not in r.keep:
            continue
        frozen = []
        if b["status"] == "running" and b.get("alive"):
            status = qmp_status(Path(b["dir"]))
            if status != "running":
                frozen.append(f"the database says running, QMP says {status}")
        done = r.mb("exec", "--json", name, "--", "true", timeout=SETTLE)
        if done.rc is None:
            frozen.append(f"`exec {name} -- true` hung for {SETTLE:.0f}s")
        if frozen:
            r.find("frozen box", f"{name}: {'; '.join(frozen)}")
        elif done.rc != 0:
            check_error(r, f"exec {name} -- true", done)
            if b["status"] == "running":
                r.find("running box unusable", f"{name}: exec failed: {done.said()}")
    for i, name, status, _ in db_boxes(r):  # a pool's box a run would take next
        d = r.home / "boxes" / i
        if status == "spare" and (d / "qmp.sock").exists() and any(
                str(d) in a for p in processes("qemu-system") for a in p.argv):
            vmm = qmp_status(d)
            if vmm != "running":
                r.find("frozen box", f"{name} (a pool's waiting box): QMP says {vmm}")
    return boxes


def check_after(r: Run, boxes: list[dict[str, Any]]) -> None:
    """Lost boxes, --rm boxes that survived, MCP boxes that outlived their server."""
    names = {b["name"]: b for b in boxes}
    for name in sorted(r.keep - set(names)):
        r.find("lost box", f"{name}: gone though the user never removed it")
    for b in boxes:
        if b["name"] in r.rm or "microbox.mcp" in (b.get("labels") or {}):
            owner = "its run" if b["name"] in r.rm else "its MCP server"
            r.find("attached box left", f"{b['name']}: {b['status']}, alive={b.get('alive')} "
                   f"after {owner} was killed, then ls and gc")


def check_pool(r: Run, timeout: float = 20.0) -> None:
    """Each pool fills up to its size again (a filler at work, or started by the
    user's next run)."""
    short: list[str] = []

    def full() -> bool:
        short.clear()
        data = r.mb("pool", "ls", "--json", timeout=30).data() or []
        short.extend(f"pool {p['id']}: {p['ready']} of {p['size']} ready" for p in data
                     if p["ready"] < p["size"])
        return not short

    if not wait_for(full, timeout, 1.0):
        r.find("pool short", "; ".join(short) + f" after {timeout:.0f}s")


def db_boxes(r: Run) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(id, name, status, labels) of every box row, pool's spares too, read-only:
    reading changes nothing, where `ls` would reconcile."""
    db = r.home / "microbox.db"
    if not db.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True,
                                                timeout=10)) as conn:
            rows = conn.execute("SELECT id, name, status, spec FROM boxes").fetchall()
    except sqlite3.Error:
        return []
    return [(i, n, st, json.loads(spec).get("labels") or {}) for i, n, st, spec in rows]


def check_owners(r: Run, grace: float = 3.0) -> None:
    """Before the user types anything: a box attached to a process that was
    killed (a `run --rm`, an MCP server) dies with it, its VMM gone within
    `grace` seconds."""
    attached = {i: n for i, n, _, labels in db_boxes(r)
                if n in r.rm or "microbox.mcp" in labels}
    r.ids.update(attached)

    def alive() -> set[str]:
        vmms = processes("qemu-system")
        return {i for i in attached
                if any(str(r.home / "boxes" / i) in a for p in vmms for a in p.argv)}

    wait_for(lambda: not alive(), grace, 0.1)
    for i in sorted(alive()):
        r.find("box outlived its owner", f"{attached[i]}: its VMM runs {grace:.0f}s after "
               "the process it was attached to was killed")


def settle(r: Run) -> None:
    """What the user runs next, then the checks that need the boxes still there."""
    if r.rm or r.kind == "mcp":
        check_owners(r)
    boxes = check_boxes(r)
    if r.kind in NEXT:
        NEXT[r.kind](r)
    done = r.mb("gc", "--json", timeout=60)
    check_error(r, "gc", done)
    done = r.mb("doctor", "--json", timeout=60)
    for line in done.data() or (done.env or {}).get("data") or []:
        if line.get("status") == "FAIL" and line.get("name") == "network" and not any(
                i[:12] in line["detail"] for i in r.ids):
            r.notes.append(f"doctor FAIL network, of other work on this host: {line['detail']}")
        elif line.get("status") == "FAIL":
            r.find("doctor FAIL", f"{line['name']}: {line['detail']} (fix: {line.get('fix')})")
        elif line.get("status") == "WARN" and line.get("name") != "accelerator":
            r.notes.append(f"doctor WARN {line['name']}: {line['detail']}")
    if done.rc is None or done.env is None:
        check_error(r, "doctor", done)
    boxes = listed(r, "ls -a after gc") or boxes
    check_after(r, boxes)
    if r.kind in ("filler", "pool-add", "rm-pooled"):
        check_pool(r)


def clean_up(r: Run) -> None:
    """The user removes everything: cleanup --all -f, pool rm, gc."""
    check_error(r, "cleanup --all -f", r.mb("cleanup", "--all", "--force", "--json",
                                           timeout=120))
    for p in r.mb("pool", "ls", "--json", timeout=30).data() or []:
        check_error(r, f"pool rm {p['id']}", r.mb("pool", "rm", "--json", p["id"], timeout=60))
    check_error(r, "gc after cleanup", r.mb("gc", "--json", timeout=60))
    for s in r.mb("snapshot", "ls", "--json", timeout=30).data() or []:
        if s.get("auto"):
            r.find("fork snapshot left", f"{s['name']} after its clones were removed and gc")


TEMP = re.compile(r"^\.tmp-|\.tmp$|microbox-tmp|^\.microbox-")
LOCK = re.compile(r"^\..*\.lock$")  # a lock file (images/tmp/.busybox.lock) stays by design


def count_left(r: Run) -> None:
    """Everything of the run's home still there after the user cleaned up."""
    wait_for(lambda: not of_home(r.home), GONE_WAIT, 0.1)
    for kind, procs in sorted(of_home(r.home).items()):
        for p in procs:
            r.find(f"leftover {kind}", f"pid {p.pid}: {' '.join(p.argv)[:160]}")
    db = r.home / "microbox.db"
    if db.exists():
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True,
                                                    timeout=10)) as conn:
                for name, status in conn.execute("SELECT name, status FROM boxes"):
                    r.find("leftover db row", f"box {name} ({status})")
                for (pid,) in conn.execute("SELECT id FROM pools"):
                    r.find("leftover db row", f"pool {pid}")
        except sqlite3.Error as exc:
            r.find("leftover db row", f"the database cannot be read: {exc}")
    boxes_dir = r.home / "boxes"
    for d in sorted(boxes_dir.iterdir()) if boxes_dir.is_dir() else []:
        r.find("leftover box dir", str(d.relative_to(r.home)))
    for top, where in ((r.home, "home"), (r.work, "copy destination")):
        for dirpath, dirnames, filenames in os.walk(top):
            for name in [*dirnames, *filenames]:
                rel = os.path.relpath(os.path.join(dirpath, name), top)
                if LOCK.match(name):
                    continue
                if (TEMP.search(name) or rel.startswith("images/tmp/")
                        or (where == "copy destination" and name.startswith("."))):
                    r.find("leftover temp file", f"{where}: {rel}")
                    if name in dirnames:
                        dirnames.remove(name)  # one finding for a whole temp tree
    for piece in net_pieces(r):
        r.find("leftover net piece", piece)
    for port in r.ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                r.find("port still bound", f"127.0.0.1:{port}")


def net_pieces(r: Run) -> list[str]:
    """--net tap pieces named after this run's boxes (tests/conftest.py net_pieces
    counts every one on the host; here only ours: other work shares the host)."""
    found = []
    shorts = {i[:12] for i in r.ids}
    if os.path.isdir("/run/netns"):
        found += [f"netns {n}" for n in os.listdir("/run/netns")
                  if n.startswith("microbox-") and n[len("microbox-"):][:12] in shorts]
    for n in os.listdir("/sys/class/net"):
        if n.startswith(("mbx", "mbs")):
            alias = _read(f"/sys/class/net/{n}/ifalias").decode().strip()
            if alias.startswith(str(r.home) + "/") or any(s.startswith(n[3:]) for s in shorts):
                found.append(f"link {n} ({alias})")
    return found


def teardown(r: Run) -> None:
    """Kill what is left of the run (already counted), unmount, remove its dirs."""
    for p in r.started:
        if p.poll() is None:
            p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
    for _ in range(3):
        procs = [q for qs in of_home(r.home).values() for q in qs]
        if not procs:
            break
        for q in procs:
            kill_verified(q.pid, lambda x: belongs(x, r.home))
        time.sleep(0.3)
    for m in reversed(r.mounts):
        unmount(m)
    shutil.rmtree(r.home, ignore_errors=True)
    shutil.rmtree(r.work, ignore_errors=True)


def unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# -- the kinds ---------------------------------------------------------------------


def box_id(r: Run, name: str) -> str:
    for b in listed(r, f"ls -a (setup, {name})") or []:
        if b["name"] == name:
            return str(b["id"])
    raise SetupFailed(f"no box {name}")


def src(r: Run) -> str:
    """The user's detached busybox box `src`; its id."""
    r.must("run", "-d", "--name", "src", "busybox", "--", "sleep", "100000")
    r.keep.add("src")
    return box_id(r, "src")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def k_fork(r: Run) -> None:
    src(r)
    r.kill_cli_at(("fork", "src", "-n", "3"))


def k_snapshot(r: Run) -> None:
    src(r)
    r.kill_cli_at(("snapshot", "create", "src", "snap1"))


def k_restore(r: Run) -> None:
    src(r)
    r.must("snapshot", "create", "src", "snap1")
    done = r.kill_cli_at(("snapshot", "restore", "snap1", "--name", "r1"))
    if done is not None and done.rc == 0:
        r.keep.add("r1")


def k_pool_add(r: Run) -> None:
    r.must("image", "warm", "busybox")
    r.kill_cli_at(("pool", "add", "busybox", "-n", "1"))


def next_pool_add(r: Run) -> None:
    """The user tries again."""
    done = r.mb("pool", "add", "--json", "busybox", "-n", "1", timeout=60)
    if done.rc != 0:
        check_error(r, "pool add (again)", done)
        r.find("retry failed", f"pool add busybox -n 1 after the kill: {done.said()}")
    next_filler(r)


def k_cp_in(r: Run) -> None:
    src(r)
    big = r.work / "big"
    with open(big, "wb") as f:
        f.write(random.Random(r.seed).randbytes(BIG))
    r.kill_cli_at(("cp", str(big), "src:/root/big"))


def next_cp_in(r: Run) -> None:
    done = r.mb("exec", "src", "--", "sh", "-c",
                "ls -a /root; stat -c 'size %s' /root/big 2>/dev/null; true", timeout=SETTLE)
    if done.rc != 0:
        return
    for line in done.out.split():
        if line.startswith(".microbox"):
            r.find("leftover temp file", f"in the box: /root/{line}")
    m = re.search(r"size (\d+)", done.out)
    if m and int(m.group(1)) != BIG:
        r.find("truncated file", f"src:/root/big has {m.group(1)} of {BIG} bytes")


def k_cp_out(r: Run) -> None:
    src(r)
    r.must("exec", "src", "--", "dd", "if=/dev/zero", "of=/root/out", "bs=1M", "count=50")
    (r.work / "dest").mkdir()
    r.kill_cli_at(("cp", "src:/root/out", str(r.work / "dest" / "out")))


def next_cp_out(r: Run) -> None:
    out = r.work / "dest" / "out"
    if out.exists() and out.stat().st_size != BIG:
        r.find("truncated file", f"{out.name} on the host has {out.stat().st_size} of {BIG} "
               "bytes, under the name the user asked for")


def fillers(r: Run) -> list[Proc]:
    return [p for p in processes("pool.main()") if p.home == str(r.home)]


def k_filler(r: Run) -> None:
    r.must("pool", "add", "busybox", "-n", "1")
    p, _ = r.spawn("run", "--rm", "busybox", "--", "true")  # takes the spare
    seen: list[Proc] = []

    def found() -> bool:
        seen.extend(fillers(r))
        return bool(seen)

    if not wait_for(found, 15, 0.005):
        r.moment = "no filler seen"
        p.wait(60)
        return
    filler = seen[0]
    start = time.monotonic()
    if r.calibrating:
        wait_for(lambda: not any(f.pid == filler.pid for f in fillers(r)), 60, 0.02)
        r.measured = time.monotonic() - start
        p.wait(60)
        return
    at = start + r.draw()
    alive = True
    while time.monotonic() < at and alive:
        time.sleep(0.005)
        alive = os.path.exists(f"/proc/{filler.pid}")
    if alive and kill_verified(filler.pid, lambda q: classify(q) == "filler"
                               and q.home == str(r.home)):
        r.moment += " killed"
    else:
        r.moment += " (it had ended)"
    p.wait(60)


def next_filler(r: Run) -> None:
    """The user's next run (it takes a spare, or restores one when the pool is empty)."""
    done = r.mb("run", "--json", "--rm", "busybox", "--", "true", timeout=60)
    if done.rc != 0:
        check_error(r, "run --rm busybox -- true", done)
        if done.rc is not None:
            r.find("run failed", f"run --rm busybox -- true: {done.said()}")


def vm_piece(r: Run, what: str) -> None:
    """SIGKILL src's shim or QEMU while an `exec src -- sleep 1` is under way."""
    bid = src(r)
    bdir = str(r.home / "boxes" / bid)

    def target(q: Proc) -> bool:
        return classify(q) == what and any(bdir in a for a in q.argv)

    start = time.monotonic()
    args = ("exec", "--json", "src", "--", "sleep", "1")
    p, out = r.spawn(*args)
    if r.calibrating:
        p.wait(60)
        r.measured = time.monotonic() - start
        return
    at = start + r.draw()
    while time.monotonic() < at:
        time.sleep(0.005)
    pids = [q.pid for q in processes(bdir) if target(q) and "-pipe" not in q.argv]
    if not pids:
        r.moment += f" (no {what} of src found)"
    for pid in pids:
        if kill_verified(pid, target):
            r.moment += f" killed {what} {pid}"
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(30)
    if p.poll() is None:
        r.find("hang", "`exec src -- sleep 1` did not end 30s after the kill")
    else:
        done = r.collect(p, out, args, start)
        r.notes.append(f"the exec under way: exit {done.rc}: {done.said()}")
        check_error(r, "the exec under way", done)


def k_shim(r: Run) -> None:
    vm_piece(r, "shim")


def k_qemu(r: Run) -> None:
    vm_piece(r, "qemu")


def k_serve(r: Run) -> None:
    import httpx

    r.must("image", "warm", "busybox")
    sock = r.work / "api.sock"
    p, _ = r.spawn("serve", "--socket", str(sock))
    client = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://api",
                          timeout=60)

    def healthy() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return client.get("/health").status_code == 200
        return False

    if not wait_for(healthy, 30, 0.1):
        raise SetupFailed("microbox serve did not answer /health in 30s")
    answer: list[Any] = []

    def post() -> None:
        try:
            answer.append(client.post("/boxes", json={"image": "busybox", "name": "api"}))
        except httpx.HTTPError as exc:
            answer.append(exc)

    start = time.monotonic()
    t = threading.Thread(target=post, daemon=True)
    t.start()
    if r.calibrating:
        t.join(120)
        r.measured = time.monotonic() - start
    else:
        at = start + r.draw()
        while time.monotonic() < at and t.is_alive():
            time.sleep(0.002)
        answered = not t.is_alive()  # before the kill: a dead server also ends the call
        p.kill()
        p.wait(10)
        r.moment += " (it had answered)" if answered else " killed"
        t.join(30)
    client.close()
    if answer and isinstance(answer[0], httpx.Response):
        r.notes.append(f"POST /boxes answered {answer[0].status_code}")
        if answer[0].status_code == 201:
            r.keep.add("api")
    elif answer:
        r.notes.append(f"POST /boxes: {answer[0]!r}")
    if p.poll() is None:
        p.kill()
        p.wait(10)


def k_mcp(r: Run) -> None:
    """The real MCP client over stdio: create_box, fork_box; the server SIGKILLed
    at the drawn moment (calibrating: the client hangs up, as a host does)."""
    import anyio

    r.must("image", "warm", "busybox")
    log = r.work / "mcp.log"
    result: dict[str, Any] = {}

    def is_server(q: Proc) -> bool:
        return q.home == str(r.home) and "mcp" in q.argv and "microbox" in q.argv

    async def body() -> None:
        from mcp import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=sys.executable,
                                       args=["-m", "microbox", "mcp"], env=r.env)
        with open(log, "w") as errlog, anyio.fail_after(120):
            async with stdio_client(params, errlog=errlog) as (read, write), \
                    ClientSession(read, write) as session:
                await session.initialize()
                servers = [p for p in processes("mcp") if is_server(p)]
                if not servers:
                    raise SetupFailed("no microbox mcp process found")
                start = time.monotonic()
                calls = anyio.CancelScope()

                async def killer(at: float) -> None:
                    await anyio.sleep(at)
                    if kill_verified(servers[0].pid, is_server):
                        result["killed_at"] = round(time.monotonic() - start, 3)
                    await anyio.sleep(2)  # a call the server died under gets no answer
                    calls.cancel()

                async with anyio.create_task_group() as tg:
                    if not r.calibrating:
                        tg.start_soon(killer, r.draw())
                    with calls:
                        try:
                            made = await session.call_tool("create_box", {"name": "m1"})
                            result["create_box error"] = made.is_error
                            forked = await session.call_tool("fork_box",
                                                             {"box": "m1", "count": 2})
                            result["fork_box error"] = forked.is_error
                        except Exception as exc:  # the server died under the call
                            result["call"] = repr(exc)[:200]
                    result["calls took"] = round(time.monotonic() - start, 3)
                    r.measured = time.monotonic() - start

    try:
        anyio.run(body)
    except SetupFailed:
        raise
    except Exception as exc:  # the client's own teardown after the kill
        result["client"] = repr(exc)[:200]
    if r.calibrating:
        r.moment = "the client hung up after create_box and fork_box"
    else:
        r.moment += " killed" if "killed_at" in result else " (not killed)"
    r.notes.append(f"mcp: {result}")


def k_first_run(r: Run) -> None:
    """The first run in a fresh home builds the image and its template."""
    r.rm.add("first")
    r.kill_cli_at(("run", "--rm", "--name", "first", "busybox", "--", "true"))


def k_rm_run(r: Run) -> None:
    r.must("image", "warm", "busybox")
    port = free_port()
    r.ports.append(port)
    r.rm.add("rr")
    r.kill_cli_at(("run", "--rm", "--name", "rr", "-p", f"{port}:80", "busybox", "--",
                   "sleep", "1"))


def k_rm_pooled(r: Run) -> None:
    """Issue repro: a pooled box taken by `run --rm`, its shim killed, then the run."""
    r.must("pool", "add", "busybox", "-n", "1")
    port = free_port()
    r.ports.append(port)
    r.rm.add("taken")
    args = ("run", "--rm", "--name", "taken", "-p", f"{port}:80", "busybox", "--", "sleep", "30")
    p, _ = r.spawn(*args)
    shims: list[Proc] = []

    def taken() -> bool:
        shims.extend(q for q in processes("microbox-shim") if classify(q) == "shim"
                     and belongs(q, r.home) and "-pipe" not in q.argv)
        return bool(shims)

    if not wait_for(taken, 30, 0.005):
        r.find("hang", "run --rm took no box in 30s")
        return
    start = time.monotonic()
    at = start + (r.window if r.calibrating else r.draw())
    while time.monotonic() < at and p.poll() is None:
        time.sleep(0.005)
    if p.poll() is not None:
        r.moment += f" (the run had ended, exit {p.returncode})"
        return
    p.send_signal(signal.SIGSTOP)
    for s in shims:
        kill_verified(s.pid, lambda q: classify(q) == "shim" and belongs(q, r.home))
    p.kill()
    p.wait(10)
    r.moment += " stopped the run, killed its shim, killed the run"


def k_full_disk(r: Run) -> None:
    """`snapshot create` onto a snapshots dir too small for it (a tmpfs)."""
    src(r)
    snaps = r.home / "snapshots"
    if r.calibrating:
        done = r.mb("snapshot", "create", "--json", "src", "snap1", timeout=120)
        r.size_needed = sum(f.stat().st_blocks * 512 for f in snaps.rglob("*") if f.is_file())
        r.moment = f"the snapshot took {r.size_needed} bytes"
        check_error(r, "snapshot create (control)", done)
        return
    snaps.mkdir(mode=0o700, exist_ok=True)
    u = r.rng.random()
    size = max(64 << 10, int(u * r.window))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=700", "tmpfs",
                              str(snaps)], capture_output=True, text=True)
    if mounted.returncode != 0:
        raise SetupFailed(f"mount tmpfs: {mounted.stderr.strip()}")
    r.mounts.append(snaps)
    r.moment = f"snapshots dir of {size} bytes ({u:.2f} of {int(r.window)})"
    done = r.mb("snapshot", "create", "--json", "src", "snap1", timeout=120)
    if done.rc == 0:
        r.moment += ": it fit"
        r.keep.add("src")
    else:
        r.notes.append(f"snapshot create: {done.said()}")
        check_error(r, "snapshot create onto a full disk", done)


CORRUPTIONS = [(f, how) for how in ("overwrite the first 4 KiB", "truncate to 0",
                                     "truncate to half")
               for f in ("disk.qcow2", "state", "mem")]


def k_template(r: Run) -> None:
    """A template file overwritten or cut short; the next warm run must boot cold."""
    r.must("image", "warm", "busybox")
    dirs = [d for d in (r.home / "templates").iterdir() if d.is_dir()
            and not d.name.startswith(".")]
    if not dirs:
        raise SetupFailed("no template made")
    # every file and damage in turn (the seed picks where to begin), the bytes random
    name, how = CORRUPTIONS[(r.seed + r.nth) % len(CORRUPTIONS)]
    path = dirs[0] / name
    if not r.calibrating:
        size = path.stat().st_size
        with open(path, "r+b") as f:
            if how == "truncate to 0":
                f.truncate(0)
            elif how == "truncate to half":
                f.truncate(size // 2)
            else:
                f.write(r.rng.randbytes(min(4096, size)))
        r.moment = f"{how} of {name} ({size} bytes)"
    else:
        r.moment = "no corruption"
    done = r.mb("run", "--json", "--rm", "busybox", "--", "true", timeout=120)
    if done.rc is None:
        r.find("hang", f"run --rm busybox -- true after {r.moment}")
    elif done.rc != 0:
        r.find("no cold fallback", f"run --rm busybox -- true after {r.moment}: {done.said()}")
        check_error(r, "run --rm busybox -- true", done)


def k_run_d(r: Run) -> None:
    r.must("image", "warm", "busybox")
    port = free_port()
    r.ports.append(port)
    done = r.kill_cli_at(("run", "-d", "--name", "d1", "-p", f"{port}:80", "busybox", "--",
                          "sleep", "100000"))
    if done is not None and done.rc == 0:
        r.keep.add("d1")


# kind: (what it does, its built-in window in seconds, the fault)
KINDS_TABLE: dict[str, tuple[str, float, Callable[[Run], None]]] = {
    "fork": ("SIGKILL `fork src -n 3`", 1.5, k_fork),
    "snapshot": ("SIGKILL `snapshot create src snap1`", 0.6, k_snapshot),
    "restore": ("SIGKILL `snapshot restore snap1`", 0.8, k_restore),
    "pool-add": ("SIGKILL `pool add busybox -n 1`", 1.0, k_pool_add),
    "cp-in": ("SIGKILL `cp` of 50 MB host -> box", 1.5, k_cp_in),
    "cp-out": ("SIGKILL `cp` of 50 MB box -> host", 1.2, k_cp_out),
    "filler": ("SIGKILL a pool's filler after a run took its box", 1.0, k_filler),
    "shim": ("SIGKILL src's shim during `exec src -- sleep 1`", 1.5, k_shim),
    "qemu": ("SIGKILL src's QEMU during `exec src -- sleep 1`", 1.5, k_qemu),
    "serve": ("SIGKILL `serve` during POST /boxes", 3.0, k_serve),
    "mcp": ("SIGKILL `mcp` during create_box + fork_box", 4.0, k_mcp),
    "rm-run": ("SIGKILL an attached `run --rm ... sleep 1`", 2.5, k_rm_run),
    "rm-pooled": ("SIGSTOP a pooled `run --rm`, SIGKILL its shim, then it", 1.0, k_rm_pooled),
    "full-disk": ("`snapshot create` onto a too small snapshots dir", 50e6, k_full_disk),
    "template": ("a corrupt template file, then a warm `run --rm`", 0.0, k_template),
    "run-d": ("SIGKILL `run -d --name d1`", 1.5, k_run_d),
    "first-run": ("SIGKILL the first `run --rm` of a home (image build, template)", 3.0,
                  k_first_run),
}
KINDS = list(KINDS_TABLE)
NEXT: dict[str, Callable[[Run], None]] = {
    "pool-add": next_pool_add, "cp-in": next_cp_in, "cp-out": next_cp_out,
    "filler": next_filler,
}
# How a calibration run's figure becomes the window: the operation's duration
# (a little more, so some kills land just after it ended), or the bytes a snapshot took.
FIXED = {"rm-pooled", "template"}


def one_run(r: Run) -> None:
    try:
        KINDS_TABLE[r.kind][2](r)
        settle(r)
        clean_up(r)
        count_left(r)
    except SetupFailed as exc:
        r.find("harness: setup failed", str(exc))
    except Exception as exc:  # a bound hit (TimeoutExpired...): the sweep goes on
        r.find("harness: error", f"{exc!r}"[:300])
    finally:
        teardown(r)


def line(r: Run) -> str:
    types = Counter(k for k, _ in r.findings)
    found = ", ".join(f"{k} x{n}" if n > 1 else k for k, n in types.items()) or "none"
    run = "cal" if r.index < 0 else str(r.index)
    return f"seed {r.seed} run {run:>3} {r.kind:<10} {r.moment or '-'}  findings: {found}"


def sweep_leftovers(root: Path) -> list[str]:
    """Anything of the sweep's homes still running or mounted: killed, unmounted, named."""
    left = []
    for p in processes():
        if belongs(p, root) or (p.home or "").startswith(str(root) + "/"):
            left.append(f"pid {p.pid}: {' '.join(p.argv)[:160]}")
            kill_verified(p.pid, lambda q: belongs(q, root)
                          or (q.home or "").startswith(str(root) + "/"))
    for m in _read("/proc/self/mounts").decode().splitlines():
        point = m.split()[1]
        if point.startswith(str(root) + "/"):
            left.append(f"mount {point}")
            unmount(Path(point))
    return left


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("seed", type=int)
    ap.add_argument("runs", type=int)
    ap.add_argument("--kinds", help=f"comma-separated, of: {','.join(KINDS)}")
    ap.add_argument("--home", default="/tmp",
                    help="make the runs' temp homes under this dir (keep it short: they "
                         "hold Unix sockets)")
    ap.add_argument("--no-calibrate", action="store_true",
                    help="use built-in windows instead of one control run of each kind")
    args = ap.parse_args()
    kinds = args.kinds.split(",") if args.kinds else KINDS
    unknown = [k for k in kinds if k not in KINDS_TABLE]
    if unknown:
        ap.error(f"unknown kinds {unknown}; known: {','.join(KINDS)}")
    if os.geteuid() != 0 and "full-disk" in kinds:
        ap.error("full-disk mounts a tmpfs: run as root, or leave it out with --kinds")
    root = Path(tempfile.mkdtemp(prefix="mbfault-", dir=args.home))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    windows = {k: KINDS_TABLE[k][1] for k in kinds}
    controls = 0
    done: list[Run] = []
    leftovers: list[str] = []
    started = time.monotonic()
    try:
        if not args.no_calibrate:
            for kind in kinds:
                if kind in FIXED:
                    continue
                cal = Run(args.seed, -1, kind, root, windows[kind], calibrating=True)
                one_run(cal)
                if kind == "full-disk":
                    windows[kind] = cal.size_needed * 1.2 or windows[kind]
                elif cal.measured:
                    windows[kind] = cal.measured * 1.15 + 0.05
                controls += len(cal.findings)
                print(f"{line(cal)}  -> window {windows[kind]:.2f}", flush=True)
                for kind_, detail in cal.findings:
                    print(f"      {kind_}: {detail}", flush=True)
        for i in range(args.runs):
            kind = kinds[i % len(kinds)]
            r = Run(args.seed, i, kind, root, windows[kind], nth=i // len(kinds))
            one_run(r)
            done.append(r)
            print(line(r), flush=True)
            for kind_, detail in r.findings:
                print(f"      {kind_}: {detail}", flush=True)
            for note in r.notes:
                print(f"      (note) {note}", flush=True)
    finally:
        leftovers = sweep_leftovers(root)
        shutil.rmtree(root, ignore_errors=True)
    for item in leftovers:
        print(f"left after the sweep (killed): {item}")
    table(done, kinds)
    total = sum(len(r.findings) for r in done) + len(leftovers)
    hit = sum(1 for r in done if r.findings)
    print(f"\nFOUND {total} finding(s) in {hit} of {len(done)} runs "
          f"(seed {args.seed}, {time.monotonic() - started:.0f}s)")
    if controls:
        print(f"(and {controls} in the control runs, which had no fault: defects without a "
              "fault, or the harness's own noise)")


def table(done: list[Run], kinds: list[str]) -> None:
    print(f"\n{'kind':<10} | {'runs':>4} | {'with a finding':>14} | findings by type")
    print(f"{'-' * 10}-+-{'-' * 4}-+-{'-' * 14}-+-{'-' * 40}")
    for kind in kinds:
        runs = [r for r in done if r.kind == kind]
        if not runs:
            continue
        types = Counter(k for r in runs for k, _ in r.findings)
        found = ", ".join(f"{k} {n}" for k, n in types.most_common()) or "-"
        print(f"{kind:<10} | {len(runs):>4} | {sum(1 for r in runs if r.findings):>14} | "
              f"{found}")


if __name__ == "__main__":
    main()

