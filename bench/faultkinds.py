"""bench/faults.py's fault kinds: each sets up what it needs, starts its
operation and kills its target at the run's moment (see faults.py)."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from faultlib import (
    BIG,
    SETTLE,
    Proc,
    Run,
    SetupFailed,
    belongs,
    check_after,
    check_boxes,
    check_error,
    check_owners,
    check_pool,
    classify,
    kill_verified,
    listed,
    processes,
    wait_for,
)


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
