"""Building microbox's Go programs (the guest agent, the box shim): static,
cached under a key that hashes their source, and that of the protocol
definition they share (proto/), and so changes with any edit."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from microbox import paths
from microbox.errors import BuildError, HostError

# The Go sources' root: an installed wheel's copy (microbox/_go, laid out as the
# checkout is, so that paths between the modules hold in both), or the checkout.
_ROOTS = (Path(__file__).resolve().parent.parent / "_go", Path(__file__).resolve().parents[3])
# Where each program's module is under the root: the agent runs in the guest,
# the shim on the host.
_PLACES = {"agent": "guest/agent", "shim": "host/shim"}


def source_dir(name: str) -> Path:
    """The module of program `name` in a checkout, or its copy inside an installed wheel."""
    for root in _ROOTS:
        d = root / _PLACES[name]
        if (d / "go.mod").exists():
            return d
    raise HostError(f"the Go source of {name} is missing from this installation",
                    "pip install --force-reinstall microbox")


def go() -> str:
    found = shutil.which("go") or ("/usr/lib/go/bin/go" if os.path.exists("/usr/lib/go/bin/go")
                                   else None)
    if found is None:
        raise HostError("the Go toolchain is missing", "apt-get install -y golang-go")
    return found


def _sources(src: Path) -> list[Path]:
    return sorted(f for f in src.rglob("*") if f.is_file()
                  and (f.suffix == ".go" or f.name in ("go.mod", "go.sum")))


# A go.mod line that puts a local directory in a module's place: `replace
# microbox/proto => ../../proto`, alone or inside a replace block.
_LOCAL_REPLACE = re.compile(r"=>\s*(\.{1,2}/\S*)\s*$")


def modules(src: Path) -> list[tuple[str, Path]]:
    """The module at `src` and every local module its go.mod replaces one with
    (proto/, the protocol's one definition), each with its path from `src`
    ("" for `src` itself): a build of `src` compiles them all."""
    found = [("", src)]
    mod = src / "go.mod"
    if mod.exists():
        for line in mod.read_text().splitlines():
            m = _LOCAL_REPLACE.search(line.split("//", 1)[0])
            if m:
                found.append((m.group(1), src / m.group(1)))
    return found


# Keys already worked out in this process, by the sources' names, sizes and
# mtimes: every box start asks for the agent's and the shim's, and hashing
# their sources took 2 ms each time; a stat of each file tells an edit.
_known: dict[tuple[tuple[str, int, int], ...], str] = {}


def cache_key(src: Path) -> str:
    """16 hex digits of a hash of the Go sources, go.mod and go.sum of the
    package and of the local modules it uses (modules): an edit of proto/
    rebuilds both the agent and the shim."""
    files = [(f"{rel}/" if rel else "", d, f) for rel, d in modules(src) for f in _sources(d)]
    seen = tuple((str(f), (st := f.stat()).st_size, st.st_mtime_ns) for _, _, f in files)
    key = _known.get(seen)
    if key is None:
        h = hashlib.sha256()
        for rel, d, f in files:
            name = rel + str(f.relative_to(d))
            h.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
        key = _known[seen] = h.hexdigest()[:16]
    return key


def build(src: Path, binary: Path, what: str) -> None:
    """`go build` of `src` into `binary` (written whole or not at all)."""
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent) as tmp:
        out = Path(tmp) / binary.name
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod",
               "GOCACHE": str(paths.cache() / "go-build"), "GOPATH": str(paths.cache() / "go")}
        done = subprocess.run(
            [go(), "build", "-trimpath", "-ldflags=-s -w", "-o", str(out), "."],
            cwd=src, env=env, capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise BuildError(f"building {what} failed: {done.stderr.strip()[-2000:]}")
        os.replace(out, binary)
