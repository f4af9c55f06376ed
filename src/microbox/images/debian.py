"""The `debian` image: mmdebstrap minbase plus the tools a sandbox is expected to
have, streamed as a tar through the flattener into `mke2fs -d -` (no root needed
for that part; mmdebstrap itself runs in root mode as root, in a user namespace
otherwise)."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from microbox import paths
from microbox.errors import BuildError, HostError
from microbox.images import filestore, mkfs
from microbox.images.progress import QUIET, Progress
from microbox.store.db import Database

DEBIAN = "debian"  # the image's name (debian:SUITE for another suite)
DEFAULT_SUITE = "bookworm"
PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates", "iproute2", "procps",
            "curl", "git", "openssh-server")
# Documentation and translations are not needed in a sandbox; copyright files stay.
EXCLUDES = ("/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
            "/usr/share/doc/*", "/usr/share/lintian/*")
KEEP = ("/usr/share/doc/*/copyright", "/usr/share/locale/locale.alias")
# Every box would share one SSH host key: the image carries none.
CUSTOMIZE = 'rm -f "$1"/etc/ssh/ssh_host_*; echo microbox > "$1"/etc/hostname'
RECIPE = 1  # bump when the build changes in a way the lists above do not show


def name_for(suite: str | None) -> str:
    return DEBIAN if suite in (None, DEFAULT_SUITE) else f"{DEBIAN}:{suite}"


def mmdebstrap_argv(suite: str, include: list[str], out: Path) -> list[str]:
    exe = shutil.which("mmdebstrap")
    if exe is None:
        raise HostError("mmdebstrap is not installed", "apt-get install -y mmdebstrap uidmap")
    if os.geteuid() != 0:
        _check_subids()
    argv = [exe, "--variant=minbase", f"--mode={'root' if os.geteuid() == 0 else 'unshare'}",
            "--include=" + ",".join([*PACKAGES, *include]), "--format=tar",
            "--customize-hook=" + CUSTOMIZE]
    argv += [f"--dpkgopt=path-exclude={p}" for p in EXCLUDES]
    argv += [f"--dpkgopt=path-include={p}" for p in KEEP]
    return [*argv, suite, str(out)]


def _check_subids() -> None:
    """mmdebstrap's unshare mode maps the tree's owners to the user's subordinate
    ids: without them it fails deep inside; say so first, with the fix."""
    user = pwd.getpwuid(os.getuid()).pw_name
    for table in ("/etc/subuid", "/etc/subgid"):
        try:
            lines = Path(table).read_text().splitlines()
        except OSError:
            lines = []
        owners = {ln.split(":", 1)[0] for ln in lines if ":" in ln}
        if user not in owners and str(os.getuid()) not in owners:
            raise HostError(f"building the debian image without root needs subordinate ids "
                            f"for {user} in {table}",
                            f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 "
                            f"{user}", "as root, or build it as root once: the build is cached")


def _cache_prefix(suite: str, include: list[str]) -> str:
    recipe = json.dumps([RECIPE, suite, PACKAGES, sorted(include), EXCLUDES, KEEP, CUSTOMIZE])
    return f"debian-{suite}-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}"


def cached_build(suite: str, include: list[str]) -> tuple[Path, str] | None:
    """A build kept for every data dir of this user (like the kernel), and its digest:
    `<cache>/images/debian-SUITE-RECIPE.sha256-HEX.ext4`."""
    for path in (paths.cache() / "images").glob(_cache_prefix(suite, include) + ".*.ext4"):
        return path, path.name.split(".")[1]
    return None


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:  # another file system: a sparse copy
        subprocess.run(["cp", "--sparse=always", str(src), str(dest)], check=True)


def build(db: Database, suite: str | None = None, include: list[str] | None = None,
          progress: Progress = QUIET, force: bool = False) -> filestore.Image:
    """Build (or take from the build cache) debian[:SUITE] and store it."""
    suite = suite or DEFAULT_SUITE
    name = name_for(suite)
    cached = cached_build(suite, include or [])
    source = f"mmdebstrap {suite} minbase" + (f" + {','.join(include)}" if include else "")
    with filestore.staging() as tmp:
        out = tmp / "image.ext4"
        if not force and cached is not None:
            progress.step(f"{name}: using the build cached in {cached[0].parent}")
            _link_or_copy(cached[0], out)
            return filestore.add(db, name, out, source, digest=cached[1])
        tar = tmp / "rootfs.tar"
        progress.step(f"mmdebstrap {suite} (minbase + {', '.join(PACKAGES)})")
        argv = mmdebstrap_argv(suite, include or [], tar)
        with tempfile.TemporaryFile("w+") as log, subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True) as proc:
            assert proc.stderr is not None
            for line in proc.stderr:
                log.write(line)
                if line.startswith("I: "):
                    progress.step(line[3:].strip())
            code = proc.wait()
            if code != 0:
                log.seek(0)
                tail = [ln.strip() for ln in log.read().splitlines() if ln.strip()][-3:]
                hint = (" (unshare mode needs user namespaces and /etc/subuid entries)"
                        if os.geteuid() != 0 else "")
                raise BuildError(f"mmdebstrap failed building {name}{hint}: "
                                 + " | ".join(tail))
        digest = mkfs.from_layers([tar], out, name, progress)
        tar.unlink()
        cache_dir = paths.cache() / "images"
        cache_dir.mkdir(parents=True, exist_ok=True)
        keep = cache_dir / f".tmp-{os.getpid()}.ext4"
        _link_or_copy(out, keep)
        keep.replace(cache_dir / f"{_cache_prefix(suite, include or [])}.{digest}.ext4")
        if cached is not None and cached[0].name.split(".")[1] != digest:
            cached[0].unlink(missing_ok=True)
        return filestore.add(db, name, out, source, digest=digest)
