"""Building the guest agent (Go, static) and its initramfs into the cache.

The cache key is a hash of the agent's source files and the Go version, so an
edit to the agent rebuilds it and an unchanged tree costs one hash.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from microbox import paths
from microbox.artifacts.initramfs import agent_initramfs
from microbox.errors import BuildError, HostError

_PACKAGED = Path(__file__).resolve().parent.parent / "_guest" / "agent"
_REPO = Path(__file__).resolve().parents[3] / "guest" / "agent"


def source_dir() -> Path:
    for d in (_PACKAGED, _REPO):
        if (d / "go.mod").exists():
            return d
    raise HostError("the guest agent's Go source is missing from this installation",
                    "pip install --force-reinstall microbox")


def _go() -> str:
    go = shutil.which("go") or ("/usr/lib/go/bin/go" if os.path.exists("/usr/lib/go/bin/go")
                                else None)
    if go is None:
        raise HostError("the Go toolchain is missing", "apt-get install -y golang-go")
    return go


def cache_key() -> str:
    src = source_dir()
    h = hashlib.sha256()
    for f in sorted(src.rglob("*")):
        if f.is_file() and (f.suffix == ".go" or f.name in ("go.mod", "go.sum")):
            h.update(str(f.relative_to(src)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def agent_dir() -> Path:
    return paths.cache() / "agent" / cache_key()


def initramfs_path() -> Path:
    return agent_dir() / "initramfs.cpio"


def build_agent(*, force: bool = False) -> Path:
    """Build the agent and its initramfs if missing; returns the initramfs path."""
    out = agent_dir()
    initrd = out / "initramfs.cpio"
    if initrd.exists() and not force:
        return initrd
    out.mkdir(parents=True, exist_ok=True)
    go = _go()
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        binary = Path(tmp) / "microbox-agent"
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod",
               "GOCACHE": str(paths.cache() / "go-build"), "GOPATH": str(paths.cache() / "go")}
        done = subprocess.run(
            [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary), "."],
            cwd=source_dir(), env=env, capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise BuildError(f"building the guest agent failed: {done.stderr.strip()[-2000:]}")
        os.replace(binary, out / "microbox-agent")
        agent_initramfs(out / "microbox-agent", initrd)
    return initrd
