"""The `busybox` image: an ext4 file built in seconds from the host's busybox-static."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from microbox.errors import BuildError, HostError
from microbox.images import filestore
from microbox.store.db import Database

SIZE = "256M"
BUSYBOX = "busybox"  # the image's name
BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
tty:x:5:
nogroup:x:65534:
"""


def _find_busybox() -> Path:
    for path in BUSYBOX_CANDIDATES:
        if path.exists():
            return path
    raise HostError("no static busybox on this host", "apt-get install -y busybox-static")


def populate(root: Path, busybox: Path) -> None:
    """Lay out the root filesystem tree of the image under `root`."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "dev", "proc", "sys",
              "run", "var", "home"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    shutil.copy2(busybox, root / "bin" / "busybox")
    listing = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for rel in listing:
        link = root / rel
        if rel == "bin/busybox" or link.exists():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        depth = rel.count("/")
        link.symlink_to("../" * depth + "bin/busybox")
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    (root / "etc" / "hostname").write_text("microbox\n")
    (root / "etc" / "os-release").write_text('NAME="microbox busybox"\nID=busybox\n')


def build(db: Database) -> filestore.Image:
    busybox = _find_busybox()
    with filestore.staging() as tmp:
        root = tmp / "root"
        root.mkdir()
        populate(root, busybox)
        out = tmp / "image.ext4"
        cmd = ["mkfs.ext4", "-q", "-F", "-L", BUSYBOX, "-b", "4096", "-J", "size=4",
               "-E", "lazy_itable_init=1,lazy_journal_init=1", "-d", str(root), str(out), SIZE]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True)
        except FileNotFoundError:
            raise HostError("mkfs.ext4 is missing", "apt-get install -y e2fsprogs") from None
        if done.returncode != 0:
            raise BuildError(f"mkfs.ext4 failed building the busybox image: "
                             f"{done.stderr.strip()}")
        return filestore.add(db, BUSYBOX, out, f"busybox-static {busybox}")
