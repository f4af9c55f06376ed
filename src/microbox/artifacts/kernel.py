"""Build and cache the guest kernel from the distribution's kernel source.

The kernel is the distribution's source (`source()`: Debian 12's 6.1 or
Debian 13's 6.12, chosen by the host's release, never by "the newest") with
the repo's patch set for that series applied (`guest/kernel/patches/SERIES/*.patch`,
in name order), configured as `make tinyconfig`
plus the repo's fragment (`guest/kernel/microbox.config`), then `make
olddefconfig`, and built as an uncompressed ELF `vmlinux` that QEMU boots through
the PVH entry point. The result lives in `<cache>/kernel/<key>/vmlinux`, where
the key hashes the kernel source version, the patches and the fragment, so
editing any of them gives a new kernel.

The cached vmlinux has no symbol table (`strip --strip-all`; the PVH note and
every loaded section stay): QEMU reads an ELF kernel's symbols at every start,
sorts them and keeps them for its disassembler, which cost each VMM about
1 MiB (docs/kernel.md). `System.map` beside it has the symbols.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from microbox import locks, paths

SOURCE_DIR = Path("/usr/src")
SOURCE_GLOB = "linux-source-*.tar.xz"
OS_RELEASE = Path("/etc/os-release")
FRAGMENT_NAME = "microbox.config"
PATCHES_NAME = "patches"
RELEASES_NAME = "releases"
# Bump when the build procedure changes in a way that changes the output.
# 2: the vmlinux is stripped, its symbols in System.map.
RECIPE_VERSION = "2"
BUILD_TOOLS = ("make", "gcc", "ld", "strip", "flex", "bison", "bc", "tar", "xz", "patch")

_ASSIGN = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_NOT_SET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
_SERIES = re.compile(r"^linux-source-(\d+\.\d+)\.tar\.xz$")


class KernelBuildError(Exception):
    """The guest kernel could not be located, configured or built.

    `str(error)` is one sentence; `detail` holds the tail of the build log, if any.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


def _series_key(series: str) -> tuple[int, ...]:
    return tuple(int(d) for d in series.split("."))


def _beside_or_in_repo(name: str) -> list[Path]:
    """Where a file of guest/kernel/ is: next to this module (wheel), or in the
    repo checkout."""
    here = Path(__file__).resolve()
    return [here.with_name(name), here.parents[3] / "guest" / "kernel" / name]


def _patches_dir() -> Path | None:
    for candidate in _beside_or_in_repo(PATCHES_NAME):
        if candidate.is_dir():
            return candidate
    return None


def supported_series() -> list[str]:
    """The kernel series the repo carries a patch set for (guest/kernel/patches/SERIES/),
    oldest first."""
    root = _patches_dir()
    if root is None:
        return []
    found = [d.name for d in root.iterdir() if d.is_dir() and re.fullmatch(r"\d+\.\d+", d.name)]
    return sorted(found, key=_series_key)


def release_series() -> dict[str, str]:
    """Debian release codename -> the series its linux-source package carries
    (guest/kernel/releases, which the Makefile reads too)."""
    mapping: dict[str, str] = {}
    for candidate in _beside_or_in_repo(RELEASES_NAME):
        if candidate.is_file():
            for raw in candidate.read_text().splitlines():
                words = raw.split("#", 1)[0].split()
                if len(words) == 2:
                    mapping[words[0]] = words[1]
            break
    return mapping


def host_release() -> tuple[str, str]:
    """(codename, pretty name) of this host's distribution, from /etc/os-release;
    ("", "") where it names none."""
    fields: dict[str, str] = {}
    try:
        text = OS_RELEASE.read_text()
    except OSError:
        return "", ""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    return fields.get("VERSION_CODENAME", ""), fields.get("PRETTY_NAME", "")


def wanted_series() -> str:
    """The series this host should build from: its Debian release's, else the
    newest the repo supports."""
    supported = supported_series()
    preferred = release_series().get(host_release()[0])
    if preferred in supported:
        return preferred
    return supported[-1] if supported else ""


@dataclass(frozen=True)
class Source:
    """The kernel source a build uses: its tarball, series and the patch set for it."""

    tarball: Path
    series: str

    @property
    def package(self) -> str:
        return f"linux-source-{self.series}"

    def patches(self) -> list[Path]:
        """The repo's patches for this series, in the order they apply."""
        root = _patches_dir()
        return sorted((root / self.series).glob("*.patch")) if root is not None else []


def source() -> Source:
    """The kernel source to build from, chosen deliberately: of the installed
    `/usr/src/linux-source-X.Y.tar.xz` whose series the repo has patches for, the
    one of this host's Debian release (guest/kernel/releases), else the newest.
    A source of a series without a patch set (a backports kernel, say) is never
    chosen: its patches would not apply."""
    supported = supported_series()
    present = {}
    for tarball in SOURCE_DIR.glob(SOURCE_GLOB):
        match = _SERIES.match(tarball.name)
        if match and match.group(1) in supported:
            present[match.group(1)] = tarball
    if not present:
        wanted = wanted_series() or "6.1"
        raise KernelBuildError(
            f"no kernel source of a supported series ({', '.join(supported)}) found at "
            f"{SOURCE_DIR}/{SOURCE_GLOB}; install it with: sudo apt-get install "
            f"linux-source-{wanted}"
        )
    wanted = wanted_series()
    series = wanted if wanted in present else max(present, key=_series_key)
    return Source(present[series], series)


def fragment_path() -> Path:
    """The config fragment."""
    candidates = _beside_or_in_repo(FRAGMENT_NAME)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise KernelBuildError(f"kernel config fragment {FRAGMENT_NAME} not found at {candidates[-1]}")


def cache_key() -> str:
    """16 hex chars identifying (kernel source version, patches, the fragment's
    settings, recipe): editing a comment of the fragment builds nothing."""
    # The tarball's name, size and mtime change with every package upgrade, and a
    # stat costs microseconds where asking dpkg costs ~10 ms on every box start.
    src = source()
    tarball = src.tarball
    st = tarball.stat()
    source_id = f"{tarball.name}:{st.st_size}:{st.st_mtime_ns}"
    digest = hashlib.sha256()
    digest.update(f"microbox-kernel-recipe:{RECIPE_VERSION}\n{source_id}\n".encode())
    settings = parse_config(fragment_path().read_text())
    digest.update("".join(f"{k}={v}\n" for k, v in sorted(settings.items())).encode())
    for patch in src.patches():
        digest.update(f"\npatch {patch.name}\n".encode())
        digest.update(patch.read_bytes())
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    return paths.cache()


def kernel_path() -> Path:
    """Where the cached vmlinux for the current source and fragment lives."""
    return cache_root() / "kernel" / cache_key() / "vmlinux"


def parse_config(text: str) -> dict[str, str]:
    """Kconfig assignments of a .config or fragment; `is not set` maps to 'n'."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if match := _ASSIGN.match(line):
            values[match.group(1)] = match.group(2)
        elif match := _NOT_SET.match(line):
            values[match.group(1)] = "n"
    return values


def merge_fragment(base: str, fragment: str) -> str:
    """`base` with every symbol the fragment mentions replaced by the fragment's line."""
    wanted = parse_config(fragment)
    kept = []
    for line in base.splitlines():
        match = _ASSIGN.match(line.strip()) or _NOT_SET.match(line.strip())
        if match is None or match.group(1) not in wanted:
            kept.append(line)
    return "\n".join(kept) + "\n" + fragment.rstrip("\n") + "\n"


def missing_options(final: str, fragment: str) -> list[str]:
    """Fragment settings that did not survive olddefconfig, as 'CONFIG_X=y (got n)'."""
    have = parse_config(final)
    missing = []
    for symbol, value in parse_config(fragment).items():
        got = have.get(symbol, "n")
        if got != value:
            missing.append(f"{symbol}={value} (got {got})")
    return missing


def _install_atomically(src: Path, dest: Path) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        shutil.copyfile(src, tmp)
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _check_host() -> None:
    if platform.machine() != "x86_64":
        raise KernelBuildError(
            f"the guest kernel builds on x86_64 hosts only, not {platform.machine()}"
        )
    absent = [tool for tool in BUILD_TOOLS if shutil.which(tool) is None]
    if absent:
        raise KernelBuildError(
            f"missing kernel build tools: {', '.join(absent)}; install them with: "
            "sudo apt-get install build-essential flex bison bc libelf-dev libssl-dev xz-utils "
            "patch"
        )


def build_kernel(
    *, force: bool = False, jobs: int | None = None, log: Callable[[str], None] | None = None
) -> Path:
    """Build the guest vmlinux into the cache unless it is there already; return its path."""
    say = log if log is not None else (lambda _msg: None)
    target = kernel_path()
    if target.is_file() and not force:
        return target
    key_dir = target.parent
    kernel_dir = key_dir.parent
    kernel_dir.mkdir(parents=True, exist_ok=True)
    with locks.held(kernel_dir / f".{key_dir.name}.lock"):
        if target.is_file() and not force:  # another process built it meanwhile
            return target
        _check_host()
        src = source()
        tarball = src.tarball
        fragment = fragment_path().read_text()
        njobs = jobs if jobs is not None else len(os.sched_getaffinity(0))
        # Trees left by a killed build of this key; the lock says none is running.
        for stale in kernel_dir.glob(f".build-{key_dir.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        build_root = Path(tempfile.mkdtemp(prefix=f".build-{key_dir.name}-", dir=kernel_dir))
        build_log = build_root / "build.log"
        kept_log = kernel_dir / f"build-{key_dir.name}.log"
        logs = (build_log, kept_log)
        try:
            say(f"kernel source: {src.package} ({tarball}), with the patch set for "
                f"{src.series}")
            say(f"extracting {tarball}")
            _run(["tar", "-xf", str(tarball), "-C", str(build_root)], build_root, logs)
            trees = [p for p in build_root.iterdir() if p.is_dir()]
            if len(trees) != 1:
                raise KernelBuildError(f"{tarball} did not unpack to a single source directory")
            tree = trees[0]
            for patch in src.patches():
                say(f"applying {patch.name}")
                _run(["patch", "-p1", "--forward", "--batch", "-i", str(patch)], tree, logs)
            say("configuring: tinyconfig + microbox.config + olddefconfig")
            _make(["tinyconfig"], tree, logs)
            dot_config = tree / ".config"
            dot_config.write_text(merge_fragment(dot_config.read_text(), fragment))
            _make(["olddefconfig"], tree, logs)
            final = dot_config.read_text()
            missing = missing_options(final, fragment)
            if missing:
                raise KernelBuildError(
                    "kernel config options did not survive olddefconfig (unmet dependencies?): "
                    + ", ".join(missing)
                )
            say(f"compiling vmlinux with {njobs} jobs (a few minutes)")
            _make([f"-j{njobs}", "vmlinux"], tree, logs, on_line=Counter(say).line)
            stripped = build_root / "vmlinux.stripped"
            _run(["strip", "--strip-all", "-o", str(stripped), str(tree / "vmlinux")], tree,
                 logs)
            key_dir.mkdir(parents=True, exist_ok=True)
            _install_atomically(dot_config, key_dir / "config")
            _install_atomically(tree / "System.map", key_dir / "System.map")
            _install_atomically(stripped, target)
            say(f"kernel ready: {target}")
            return target
        except KernelBuildError:
            _keep_log(build_log, kept_log)
            raise
        except OSError as exc:
            _keep_log(build_log, kept_log)
            raise KernelBuildError(f"kernel build failed: {exc}") from exc
        finally:
            shutil.rmtree(build_root, ignore_errors=True)


def _keep_log(build_log: Path, dest: Path) -> None:
    if build_log.is_file():
        shutil.copyfile(build_log, dest)


class Counter:
    """Says how far a compile got: one line every EVERY files kbuild compiled
    (its quiet output names each, `  CC      kernel/fork.o`)."""

    EVERY = 200

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.files = 0

    def line(self, text: bytes) -> None:
        if text.startswith((b"  CC ", b"  AS ")):
            self.files += 1
            if self.files % self.EVERY == 0:
                self.say(f"compiling vmlinux: {self.files} files compiled")


def _make(args: list[str], tree: Path, logs: tuple[Path, Path],
          on_line: Callable[[bytes], None] | None = None) -> None:
    _run(["make", "ARCH=x86_64", *args], tree, logs, on_line)


def _run(argv: list[str], cwd: Path, logs: tuple[Path, Path],
         on_line: Callable[[bytes], None] | None = None) -> None:
    """Run argv appending its output to logs[0] (each line also to `on_line`);
    on failure name logs[1] (the kept copy)."""
    build_log, kept_log = logs
    env = dict(os.environ, LC_ALL="C", KBUILD_BUILD_USER="microbox", KBUILD_BUILD_HOST="microbox")
    with build_log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        with subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
            assert proc.stdout is not None
            for text in proc.stdout:
                out.write(text)
                if on_line is not None:
                    on_line(text)
        returncode = proc.returncode
    if returncode != 0:
        raise KernelBuildError(
            f"`{' '.join(argv)}` failed with exit code {returncode}; "
            f"the build log is kept at {kept_log}",
            detail=_tail(build_log),
        )
