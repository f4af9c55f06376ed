"""Shared fixtures. VM tests run against one MICROBOX_HOME per session (short
path: Unix socket paths are limited to 108 bytes) under a leak guard."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from microbox.vmm import process


def qemu_pids(home: Path, program: str = "qemu-system") -> set[int]:
    """QEMU processes (or others named like `program`) whose command line
    points into `home`."""
    found = set()
    for p in psutil.process_iter(["cmdline"]):
        try:
            argv = p.info["cmdline"] or []
        except psutil.Error:
            continue
        if argv and program in argv[0] and any(str(home) in a for a in argv):
            found.add(p.pid)
    return found


def shim_pids(home: Path) -> set[int]:
    """Box shims serving boxes under `home`, and the `-pipe` processes QEMU
    starts for their proxy connections (the same binary, the box dir in argv)."""
    return qemu_pids(home, "microbox-shim")


def net_pieces() -> set[str]:
    """Every --net tap piece on this host: box namespaces, box and scratch TAP
    links, and the chains of microbox's nftables table (the table itself too)."""
    found = {f"netns {n}" for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns")
                                    else []) if n.startswith("microbox-")}
    found |= {f"link {n}" for n in os.listdir("/sys/class/net") if n.startswith(("mbx", "mbs"))}
    nft = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if nft is not None and os.geteuid() == 0:
        done = subprocess.run([nft, "-j", "list", "table", "inet", "microbox"],
                              capture_output=True, text=True)
        if done.returncode == 0:
            found.add("nft table inet microbox")
            for item in json.loads(done.stdout)["nftables"]:
                if "chain" in item:
                    found.add(f"nft chain {item['chain']['name']}")
    return found


def still_running(pids: set[int], timeout: float) -> set[int]:
    """Those of `pids` still running after up to `timeout` seconds (a zombie is dead)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = {pid for pid in pids if not process.exited(pid)}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


@pytest.fixture(scope="session")
def microbox_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="mbt-", dir="/tmp"))
    old = os.environ.get("MICROBOX_HOME")
    os.environ["MICROBOX_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("MICROBOX_HOME", None)
    else:
        os.environ["MICROBOX_HOME"] = old
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def home(microbox_home: Path) -> Path:
    return microbox_home


@pytest.fixture(scope="session")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Real registries on 127.0.0.1 (anonymous, basic auth, bearer tokens), each
    holding the test images test/app:1, test/zstd:1 and test/multi:1."""
    from tests.registry import session_registries

    yield from session_registries(tmp_path_factory.mktemp("registries"))


@pytest.fixture
def own_home(microbox_home: Path) -> Iterator[Path]:
    """A fresh MICROBOX_HOME for one test (short path: it holds Unix sockets)."""
    fresh = Path(tempfile.mkdtemp(prefix="mbi-", dir="/tmp"))
    os.environ["MICROBOX_HOME"] = str(fresh)
    try:
        yield fresh
    finally:
        os.environ["MICROBOX_HOME"] = str(microbox_home)
        shutil.rmtree(fresh, ignore_errors=True)
