"""microbox's builds of libcapstone and libpmem for the VMM (artifacts/vmm_libs.py),
made with the host's real compiler and checked against real programs: the
installed QEMU, and small programs linked here that stand for other QEMU builds."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from microbox.artifacts import vmm_libs
from microbox.vmm import spawn

CC = shutil.which("cc") or shutil.which("gcc")
QEMU = shutil.which("qemu-system-x86_64")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler on this host")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROBOX_CACHE", str(tmp_path / "cache"))


def _cache_dir() -> Path:
    return Path(os.environ["MICROBOX_CACHE"]) / "vmm-lib"


def _cc(*args: str | Path) -> None:
    assert CC is not None
    subprocess.run([CC, *map(str, args)], check=True, capture_output=True)


def _program(tmp: Path, libs: dict[str, list[str]]) -> Path:
    """A program bound at load (as Debian builds QEMU) linking, for each soname
    in `libs`, a library of its own that defines those functions, all of
    which the program names (and calls only with more than 5 arguments)."""
    calls = [f for names in libs.values() for f in names]
    decls = "".join(f"int {f}(void);\n" for f in calls)
    body = "".join(f"{f}();\n" for f in calls)
    (tmp / "main.c").write_text(f"{decls}int main(int c, char **v) {{ (void)v; if (c > 5) {{ "
                                f"{body} }} return 0; }}\n")
    args: list[str | Path] = ["-o", tmp / "qemu", tmp / "main.c", "-Wl,-z,now"]
    libdir = tmp / "lib"
    libdir.mkdir()
    for soname, names in libs.items():
        (libdir / "lib.c").write_text("".join(f"int {f}(void) {{ return 0; }}\n" for f in names))
        _cc("-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", libdir / soname, libdir / "lib.c")
        args.append(f"-l:{soname}")
    _cc(*args, f"-L{libdir}", f"-Wl,-rpath,{libdir}")
    return tmp / "qemu"


def _links(qemu: str, library: str) -> bool:
    out = subprocess.run([qemu, "-version"], env={**os.environ, "LD_TRACE_LOADED_OBJECTS": "1"},
                         capture_output=True, text=True).stdout
    return f"{library}.so." in out


@needs_cc
@pytest.mark.skipif(QEMU is None, reason="QEMU is not installed")
def test_the_installed_qemu_starts_with_our_builds() -> None:
    assert QEMU is not None
    linked = [b.library for b in vmm_libs.BUILDS if _links(QEMU, b.library)]
    d = vmm_libs.library_dir(QEMU)
    if not linked:
        assert d is None
        pytest.skip("this QEMU links neither libcapstone nor libpmem")
    assert d is not None
    assert sorted(p.name.split(".so")[0] for p in d.glob("lib*.so.*")) == sorted(linked)
    if "libcapstone" in linked:
        cs = ctypes.CDLL(str(next(d.glob("libcapstone.so.*"))))
        handle = ctypes.c_size_t(7)
        assert cs.cs_open(3, 0, ctypes.byref(handle)) == 2  # CS_ERR_ARCH: no disassembler
        assert handle.value == 0
    if "libpmem" in linked:
        pmem = ctypes.CDLL(str(next(d.glob("libpmem.so.*"))))
        src = ctypes.create_string_buffer(bytes(range(256)) * 40)
        dst = ctypes.create_string_buffer(len(src))
        pmem.pmem_memcpy_persist.restype = ctypes.c_void_p
        assert pmem.pmem_memcpy_persist(dst, src, ctypes.c_size_t(len(src))) == \
            ctypes.addressof(dst)
        assert dst.raw == src.raw
        pmem.pmem_persist(ctypes.byref(dst, 3), ctypes.c_size_t(100))
    done = subprocess.run([QEMU, "-version"], env=spawn.environ(d), capture_output=True)
    assert done.returncode == 0, done.stderr
    built = {p: p.stat().st_mtime_ns for p in d.iterdir()}
    assert vmm_libs.library_dir(QEMU) == d  # not made again
    assert {p: p.stat().st_mtime_ns for p in d.iterdir()} == built
    assert vmm_libs.status(QEMU) == (True, f"QEMU starts with microbox's {', '.join(linked)} "
                                           f"({d})")


@needs_cc
def test_only_the_builds_a_qemu_accepts_are_kept(tmp_path: Path) -> None:
    qemu = _program(tmp_path, {"libcapstone.so.4": ["cs_open"],
                               "libpmem.so.1": ["pmem_persist", "pmem_from_the_future"]})
    assert subprocess.run([qemu]).returncode == 0  # runs with its own libraries
    d = vmm_libs.library_dir(str(qemu))
    assert d is not None
    assert [p.name for p in d.iterdir() if ".so" in p.name] == ["libcapstone.so.4"]
    assert vmm_libs.status(str(qemu)) == (True, f"QEMU starts with microbox's libcapstone ({d})")


@needs_cc
def test_a_qemu_that_refuses_every_build_keeps_its_own_libraries(tmp_path: Path) -> None:
    qemu = _program(tmp_path, {"libcapstone.so.4": ["cs_open", "cs_from_the_future"]})
    assert vmm_libs.library_dir(str(qemu)) is None
    (marker,) = _cache_dir().glob("*/unused")
    assert marker.read_text().startswith("QEMU refused our libcapstone: ")
    assert "QEMU links no libpmem" in marker.read_text()
    assert not list(marker.parent.glob("lib*"))  # nothing refused is kept


@needs_cc
def test_a_qemu_without_either_library_is_left_alone(tmp_path: Path) -> None:
    qemu = _program(tmp_path, {})
    assert vmm_libs.status(str(qemu)) == (
        True, "microbox's libcapstone and libpmem are built when the first box starts")
    assert not _cache_dir().exists()  # status builds nothing
    assert vmm_libs.library_dir(str(qemu)) is None
    assert vmm_libs.status(str(qemu)) == (
        True, "QEMU loads its own libraries: QEMU links no libcapstone; QEMU links no libpmem")


@needs_cc
def test_a_static_qemu_is_only_asked_its_version(tmp_path: Path) -> None:
    """The loader's trace does not apply to a static binary: it runs, so it
    must be run with -version (a bare QEMU would start a VM)."""
    started = tmp_path / "started"
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include <string.h>\n'
        'int main(int c, char **v) { if (c == 2 && !strcmp(v[1], "-version")) return 0; '
        f'fclose(fopen("{started}", "w")); return 0; }}\n')
    _cc("-static", "-o", tmp_path / "qemu", tmp_path / "main.c")
    assert vmm_libs.library_dir(str(tmp_path / "qemu")) is None
    assert not started.exists()


@needs_cc
def test_a_rebuilt_qemu_is_checked_again(tmp_path: Path) -> None:
    qemu = _program(tmp_path, {})
    assert vmm_libs.library_dir(str(qemu)) is None
    os.utime(qemu, ns=(0, 0))
    vmm_libs.library_dir(str(qemu))
    assert len(list(_cache_dir().glob("*/unused"))) == 2


def test_without_a_compiler_nothing_is_recorded(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "qemu"
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert vmm_libs.library_dir(str(fake)) is None
    assert not _cache_dir().exists()
    ok, detail = vmm_libs.status(str(fake))
    assert not ok and detail.startswith("no C compiler")


def test_the_vmm_environment_puts_our_builds_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/mine")
    assert spawn.environ(Path("/ours"))["LD_LIBRARY_PATH"] == "/ours:/opt/mine"
    assert spawn.environ(None)["LD_LIBRARY_PATH"] == "/opt/mine"
    monkeypatch.delenv("LD_LIBRARY_PATH")
    assert spawn.environ(Path("/ours"))["LD_LIBRARY_PATH"] == "/ours"
    assert "LD_LIBRARY_PATH" not in spawn.environ(None)
