"""bench/faults.py's means: the processes of a home, one run's record and
the checks that find what a fault left (see faults.py for the sweep)."""

from __future__ import annotations

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
import time
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
    slot: int = 0  # a calibration run's number among the kinds (its dir's name)
    size_needed: int = 0  # full-disk: bytes a snapshot took (calibration)
    home: Path = field(init=False)
    work: Path = field(init=False)  # its scratch: command output, cp's files, sockets
    rng: random.Random = field(init=False)
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        tag = "c" if self.index < 0 else ""
        n = self.index if self.index >= 0 else self.slot
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
        if r.kind == "rm-pooled":
            # Its owner's watcher, the shim, was killed first: nothing is left
            # to kill the VMM until a command runs, and the next command's
            # reconcile does (DESIGN.md: what a SIGKILLed owner leaves is reaped
            # by gc and reconcile; docs/pool.md). check_after counts one still
            # there after `ls` and `gc` as "attached box left".
            r.notes.append(f"{attached[i]}: its VMM waits for the next command (owner "
                           "and shim both killed)")
            continue
        r.find("box outlived its owner", f"{attached[i]}: its VMM runs {grace:.0f}s after "
               "the process it was attached to was killed")


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
CP_TEMP = re.compile(r"^\..+\.microbox-cp-[0-9a-f]{8}$")
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
                if where == "copy destination" and CP_TEMP.search(name):
                    # cp out writes under a hidden temp name and renames it when
                    # whole (docs/boxes.md): a SIGKILL can leave the temp, never a
                    # partial file under the real name
                    r.notes.append(f"hidden cp temp left by the kill: {rel}")
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


