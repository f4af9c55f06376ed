"""cleanup, kill, gc and doctor: every prompt path, and the database gone or corrupt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from microbox.core.orphans import scan
from tests.vm.helpers import mb, mb_tty


def js(*args: str) -> Any:
    r = mb(*args, "--json")
    return json.loads(r.stdout)


def test_cleanup_prompt_paths() -> None:
    assert mb("create", "--name", "c1", "busybox").returncode == 0
    assert mb("create", "--start", "--name", "c2", "busybox").returncode == 0
    dry = mb("cleanup", "--dry-run")
    # Names are compared as whole words: a random hex id can contain "c2".
    listed = [ln.split()[0] for ln in dry.stderr.decode().splitlines()[1:]]
    assert dry.returncode == 0 and listed == ["c1"]
    ids = {b["id"]: b["name"] for b in js("list", "--all")["data"]}
    would = js("cleanup", "--dry-run")["data"]["would_delete"]
    assert [ids[i] for i in would] == ["c1"]
    refused = mb("cleanup", stdin=subprocess.DEVNULL)
    assert refused.returncode == 1 and b"--force" in refused.stderr
    body = js("cleanup")
    assert body["exit_code"] == 1 and body["error"]["type"] == "refused"
    declined = mb_tty("cleanup", answer=b"n\n")
    assert declined.returncode == 0 and b"nothing deleted" in declined.stderr
    assert {b["name"] for b in js("list", "--all")["data"]} == {"c1", "c2"}
    accepted = mb_tty("cleanup", answer=b"y\n")
    assert accepted.returncode == 0
    assert [b["name"] for b in js("list", "--all")["data"]] == ["c2"]
    assert mb("cleanup", "--all", "--force").returncode == 0
    assert js("list", "--all")["data"] == [] and scan() == []


def test_kill_prompt_paths_and_prefix() -> None:
    assert mb("create", "--start", "--name", "k1", "busybox").returncode == 0
    box_id = js("inspect", "k1")["data"]["id"]
    r = mb("kill", box_id[:6], stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and b"--force" in r.stderr
    assert js("kill", box_id[:6])["error"]["type"] == "refused"
    r = mb_tty("kill", box_id[:6], answer=b"n\n")
    assert r.returncode == 0 and [v.box_id for v in scan()] == [box_id]
    r = mb_tty("kill", "k1", answer=b"y\n")  # by name too, as the database says
    assert r.returncode == 0, r.stderr
    assert scan() == []
    assert js("inspect", "k1")["data"]["status"] == "error"
    assert mb("kill", "--force", "ffff").returncode == 1
    r = mb("kill", "--force", "k1")
    assert r.returncode == 1
    assert r.stderr == b"microbox: box 'k1' has no running VMM; run 'microbox list --all'.\n"
    assert mb("delete", "k1").returncode == 0


def test_kill_and_doctor_with_a_corrupt_database(fresh_home: Path) -> None:
    assert mb("create", "--start", "--name", "kc", "busybox").returncode == 0
    box_id = js("inspect", "kc")["data"]["id"]
    db = fresh_home / "microbox.db"
    for extra in ("-wal", "-shm"):
        Path(str(db) + extra).unlink(missing_ok=True)
    db.write_bytes(b"garbage" * 1000)
    doc = mb("doctor")
    assert doc.returncode == 1
    assert b"microbox kill" not in doc.stdout  # its VMM cannot be looked up: not an orphan
    body = js("doctor")
    assert body["ok"] is False and body["exit_code"] == 1
    checks = {c["name"]: c for c in body["data"]}
    assert "is corrupt" in checks["database"]["detail"]
    assert checks["database"]["fix"] == f"mv {db} {db}.corrupt"
    for name in ("orphans", "pools"):
        assert checks[name]["status"] == "WARN" and checks[name]["fix"] is None  # not checked
    r = mb("kill", "--force", "kc")  # a name needs a readable database
    assert r.returncode == 1 and b"no running box VMM has an id starting with 'kc'" in r.stderr
    r = mb("kill", "--force", box_id[:8])
    assert r.returncode == 0, r.stderr
    assert scan() == []
    db.unlink()  # the user moves the corrupt database aside; gc clears the rest
    assert mb("gc").returncode == 0
    assert list((fresh_home / "boxes").iterdir()) == []


def test_gc_removes_strays_and_never_a_live_box(home: Path) -> None:
    assert mb("create", "--start", "--name", "live", "busybox").returncode == 0
    stray = home / "boxes" / ("e" * 32)
    stray.mkdir()
    (stray / "disk.qcow2").write_bytes(b"x")
    dry = js("gc", "--dry-run")["data"]
    assert dry["dirs"] == [str(stray)] and stray.exists()
    assert js("gc")["data"]["dirs"] == [str(stray)] and not stray.exists()
    assert mb("exec", "live", "--", "true").returncode == 0
    assert mb("delete", "-f", "live").returncode == 0


def test_doctor_is_read_only(fresh_home: Path) -> None:
    body = js("doctor")
    checks = {c["name"]: c for c in body["data"]}
    assert checks["database"]["status"] == "PASS"
    assert "will be created" in checks["database"]["detail"]
    assert checks["kernel"]["status"] == "PASS" and checks["agent"]["status"] == "PASS"
    assert not (fresh_home / "microbox.db").exists()
    assert list(fresh_home.iterdir()) == []


def test_eight_way_concurrency() -> None:
    script = ("set -e; {mb} create --start --name cc{n} busybox >/dev/null; "
              "{mb} exec cc{n} -- echo cc{n}; {mb} delete -f cc{n} >/dev/null")
    mbcmd = f"{sys.executable} -m microbox"
    procs = [subprocess.Popen(["sh", "-c", script.format(mb=mbcmd, n=n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for n in range(8)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    for n, (code, out, err) in enumerate(results):
        assert code == 0, err
        assert out == f"cc{n}\n".encode()
        assert b"locked" not in err
    assert js("list", "--all")["data"] == []
