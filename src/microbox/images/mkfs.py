"""`mke2fs -d -`: an ext4 image from a tar stream, ownership kept, no root needed.

Tar input needs e2fsprogs >= 1.47.1 (bookworm-backports has 1.47.2). The file
system gets FREE_BYTES of room beyond its contents: a box's writes land in its
qcow2 overlay but need free blocks in this file system. The file is sparse, so
the room costs no disk until a box uses it.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from microbox.errors import BuildError, HostError
from microbox.images import flatten
from microbox.images.progress import QUIET, Progress, human

FREE_BYTES = 1 << 30
FREE_INODES = 65536
JOURNAL_MIB = 16
MIN_VERSION = (1, 47, 1)
_FIX = "apt-get install -y -t bookworm-backports e2fsprogs"


class _Counting:
    """A write-only stream that hashes and counts what goes to mke2fs."""

    def __init__(self, f: IO[bytes], progress: Callable[[int], None]) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.count = 0
        self.progress = progress

    def write(self, data: bytes) -> int:
        self.f.write(data)
        self.sha.update(data)
        self.count += len(data)
        self.progress(self.count)
        return len(data)


def geometry(data_bytes: int, inodes: int) -> tuple[int, int]:
    """File system size in bytes (a multiple of 1 MiB) and inode count for a tree."""
    size = int(data_bytes * 1.08) + inodes * 256 + ((JOURNAL_MIB + 16) << 20) + FREE_BYTES
    size = -(-size // (1 << 20)) << 20
    return size, max(size // 16384, inodes + FREE_INODES)


def _version() -> tuple[int, ...]:
    try:
        done = subprocess.run(["mke2fs", "-V"], capture_output=True, text=True)
    except FileNotFoundError:
        raise HostError("mke2fs is missing", "apt-get install -y e2fsprogs") from None
    m = re.search(r"mke2fs (\d+)\.(\d+)(?:\.(\d+))?", done.stderr + done.stdout)
    return tuple(int(g or 0) for g in m.groups()) if m else (0,)


def make_ext4(out: Path, label: str, data_bytes: int, inodes: int,
              feed: Callable[[IO[bytes]], None],
              progress: Callable[[int], None] = lambda _: None) -> str:
    """Run mke2fs on `out` with the tar that `feed` writes; returns "sha256-<hex>" of
    that tar, the content address of the image."""
    size, inode_count = geometry(data_bytes, inodes)
    cmd = ["mke2fs", "-q", "-F", "-t", "ext4", "-L", label[:16], "-b", "4096", "-m", "0",
           "-N", str(inode_count), "-J", f"size={JOURNAL_MIB}",
           "-E", "lazy_itable_init=1,lazy_journal_init=1", "-d", "-", str(out),
           str(size // 1024) + "k"]
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=err)
        except FileNotFoundError:
            raise HostError("mke2fs is missing", "apt-get install -y e2fsprogs") from None
        assert proc.stdin is not None
        sink = _Counting(proc.stdin, progress)
        broken = False
        try:
            feed(sink)  # type: ignore[arg-type]
            proc.stdin.close()
        except BrokenPipeError:
            broken = True
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    broken = True
        code = proc.wait()
        err.seek(0)
        message = err.read().decode(errors="replace").strip()
    if code != 0 or broken:
        version = _version()
        if version < MIN_VERSION:
            raise HostError(f"mke2fs {'.'.join(map(str, version))} cannot read a tar stream "
                            "(it needs e2fsprogs 1.47.1 or later)", _FIX)
        tail = " | ".join(message.splitlines()[-3:]) or f"exit {code}"
        raise BuildError(f"mke2fs failed making the image: {tail}")
    return "sha256-" + sink.sha.hexdigest()


def from_layers(tars: list[Path], out: Path, label: str, progress: Progress = QUIET) -> str:
    """Flatten uncompressed layer tars (bottom first) into the ext4 file `out`;
    returns the content address (sha256 of the merged tree's tar)."""
    tree = flatten.read_tree(tars)
    data, inodes = tree.usage()
    progress.step(f"writing the ext4 file system ({human(data)} in {inodes} files)")
    digest = make_ext4(out, label, data, inodes, lambda f: flatten.write_tar(tree, tars, f),
                       progress=lambda n: progress.advance(n, data))
    set_xattrs(out, [x for x in flatten.xattrs(tree) if x[1] != "security.capability"])
    return digest


def _quoted(text: str) -> str:
    if any(c in text for c in '"\n\\'):
        raise BuildError(f"cannot set extended attributes on the path {text!r}")
    return f'"{text}"'


def set_xattrs(image: Path, attrs: list[tuple[str, str, bytes]]) -> None:
    """Extended attributes other than security.capability, which `mke2fs -d -` does not
    copy from a tar (e2fsprogs 1.47.2), set with one `debugfs -w` batch."""
    if not attrs:
        return
    with tempfile.TemporaryDirectory() as tmp:
        lines = []
        for i, (path, name, value) in enumerate(attrs):
            (Path(tmp) / str(i)).write_bytes(value)
            lines.append(f"ea_set -f {Path(tmp) / str(i)} {_quoted('/' + path)} "
                         f"{_quoted(name)}")
        (Path(tmp) / "cmds").write_text("\n".join(lines) + "\n")
        done = subprocess.run(["debugfs", "-w", "-f", str(Path(tmp) / "cmds"), str(image)],
                              capture_output=True, text=True)
    errors = [ln for ln in done.stderr.splitlines() if ln and not ln.startswith("debugfs ")]
    if done.returncode != 0 or errors:
        raise BuildError("debugfs could not set extended attributes: "
                         + " | ".join(errors[-3:] or [f"exit {done.returncode}"]))
