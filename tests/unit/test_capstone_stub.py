"""The libcapstone stub for the VMM (artifacts/capstone_stub.py), built with the
host's real compiler and checked against real programs: the installed QEMU, and
small programs linked here that stand for other QEMU builds."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from microbox.artifacts import capstone_stub
from microbox.vmm import spawn

CC = shutil.which("cc") or shutil.which("gcc")
QEMU = shutil.which("qemu-system-x86_64")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler on this host")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROBOX_CACHE", str(tmp_path / "cache"))


def _links_capstone(qemu: str) -> bool:
    out = subprocess.run([qemu], env={**os.environ, "LD_TRACE_LOADED_OBJECTS": "1"},
                         capture_output=True, text=True).stdout
    return "libcapstone.so." in out


def _cc(*args: str | Path) -> None:
    assert CC is not None
    subprocess.run([CC, *map(str, args)], check=True, capture_output=True)


def _program(tmp: Path, calls: list[str], lib_symbols: list[str]) -> Path:
    """A program bound at load (as Debian builds QEMU) that calls `calls` in a
    libcapstone.so.4 of its own defining `lib_symbols`; no library if none."""
    decls = "".join(f"int {s}(void);\n" for s in calls)
    body = "".join(f"{s}();\n" for s in calls)
    (tmp / "main.c").write_text(f"{decls}int main(int c, char **v) {{ (void)v; if (c > 5) {{ "
                                f"{body} }} return 0; }}\n")
    args: list[str | Path] = ["-o", tmp / "qemu", tmp / "main.c", "-Wl,-z,now"]
    if lib_symbols:
        libdir = tmp / "lib"
        libdir.mkdir()
        (libdir / "lib.c").write_text("".join(f"int {s}(void) {{ return 0; }}\n"
                                              for s in lib_symbols))
        _cc("-shared", "-fPIC", "-Wl,-soname,libcapstone.so.4", "-o",
            libdir / "libcapstone.so.4", libdir / "lib.c")
        args += [f"-L{libdir}", f"-Wl,-rpath,{libdir}", "-l:libcapstone.so.4"]
    _cc(*args)
    return tmp / "qemu"


@needs_cc
@pytest.mark.skipif(QEMU is None, reason="QEMU is not installed")
def test_the_installed_qemu_gets_a_stub_whose_every_call_fails() -> None:
    assert QEMU is not None
    if not _links_capstone(QEMU):
        assert capstone_stub.library_dir(QEMU) is None
        pytest.skip("this QEMU links no libcapstone")
    d = capstone_stub.library_dir(QEMU)
    assert d is not None
    lib = next(d.glob("libcapstone.so.*"))
    stub = ctypes.CDLL(str(lib))
    handle = ctypes.c_size_t(7)
    assert stub.cs_open(3, 0, ctypes.byref(handle)) == 2  # CS_ERR_ARCH: no disassembler
    assert handle.value == 0
    assert stub.cs_malloc(ctypes.c_size_t(0)) == 0
    # QEMU starts with it, and the check is not run again.
    done = subprocess.run([QEMU, "-version"], env=spawn.environ(d), capture_output=True)
    assert done.returncode == 0, done.stderr
    built = lib.stat().st_mtime_ns
    assert capstone_stub.library_dir(QEMU) == d
    assert lib.stat().st_mtime_ns == built
    assert capstone_stub.status(QEMU) == (True, f"QEMU starts with microbox's libcapstone "
                                                f"stub ({d})")


@needs_cc
def test_a_qemu_that_needs_more_than_the_stub_keeps_its_own_library(tmp_path: Path) -> None:
    qemu = _program(tmp_path, ["cs_open", "cs_from_the_future"],
                    ["cs_open", "cs_from_the_future"])
    assert subprocess.run([qemu]).returncode == 0  # runs with its own library
    assert capstone_stub.library_dir(str(qemu)) is None
    (marker,) = Path(os.environ["MICROBOX_CACHE"]).glob("vmm-lib/*/unused")
    assert "refused the stub" in marker.read_text()
    assert not list(marker.parent.glob("libcapstone*"))  # the stub is not kept


@needs_cc
def test_a_qemu_without_capstone_is_left_alone(tmp_path: Path) -> None:
    qemu = _program(tmp_path, [], [])
    assert capstone_stub.status(str(qemu)) == (
        True, "the libcapstone stub is built when the first box starts")
    assert not Path(os.environ["MICROBOX_CACHE"]).exists()  # status builds nothing
    assert capstone_stub.library_dir(str(qemu)) is None
    (marker,) = Path(os.environ["MICROBOX_CACHE"]).glob("vmm-lib/*/unused")
    assert "links no libcapstone" in marker.read_text()
    assert capstone_stub.status(str(qemu)) == (
        True, "QEMU loads its own libcapstone: QEMU links no libcapstone")


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
    assert capstone_stub.library_dir(str(tmp_path / "qemu")) is None
    assert not started.exists()


@needs_cc
def test_a_rebuilt_qemu_is_checked_again(tmp_path: Path) -> None:
    qemu = _program(tmp_path, [], [])
    assert capstone_stub.library_dir(str(qemu)) is None
    os.utime(qemu, ns=(0, 0))
    capstone_stub.library_dir(str(qemu))
    assert len(list(Path(os.environ["MICROBOX_CACHE"]).glob("vmm-lib/*/unused"))) == 2


def test_without_a_compiler_nothing_is_recorded(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "qemu"
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert capstone_stub.library_dir(str(fake)) is None
    assert not (Path(os.environ["MICROBOX_CACHE"]) / "vmm-lib").exists()
    ok, detail = capstone_stub.status(str(fake))
    assert not ok and detail.startswith("no C compiler")


def test_the_vmm_environment_puts_the_stub_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/mine")
    assert spawn.environ(Path("/stub"))["LD_LIBRARY_PATH"] == "/stub:/opt/mine"
    assert spawn.environ(None)["LD_LIBRARY_PATH"] == "/opt/mine"
    monkeypatch.delenv("LD_LIBRARY_PATH")
    assert spawn.environ(Path("/stub"))["LD_LIBRARY_PATH"] == "/stub"
    assert "LD_LIBRARY_PATH" not in spawn.environ(None)
