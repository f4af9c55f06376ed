"""Small builds of libraries QEMU links, put first on the VMM's library path.

Debian's QEMU links libraries for features microbox never asks of it, and
each costs every VMM at start: the dynamic loader maps it (and what it
links), applies its relocations, and each QEMU keeps a private copy of the
relocated tables. Two are replaced by builds of microbox's own, with the same
soname and the API QEMU calls:

- libcapstone, a disassembler QEMU uses only to print guest code (`-d in_asm`,
  the monitor's `x/i`): 77,000 relocations and 1.4 MiB of each QEMU's Pss.
  Every call of the build fails; QEMU then has no disassembler, a case it
  handles.
- libpmem, for guest RAM on persistent memory (`pmem=on`), with libndctl,
  libdaxctl, libkmod and libcrypto behind it: 2.9 ms of each QEMU start and
  0.8 MiB of Pss. The build persists by flushing cache lines (`clflush`),
  slower than libpmem's best and as correct.

Measured in docs/snapshots.md. The builds are made once per QEMU binary with
the host's C compiler, and each is kept only if that QEMU starts with it
(`-version` with LD_BIND_NOW: every symbol QEMU names must bind). Without a
compiler, or for a QEMU that links neither library or refuses a build, the VMM
loads the system's libraries as before: nothing but memory and start time
depends on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from microbox import paths


@dataclass(frozen=True)
class Build:
    """A library of ours standing in for a system one."""

    library: str  # the soname's stem: libcapstone.so.N
    source: str  # C, compiled without libc
    symbol_version: str | None = None  # the version node QEMU's references carry


# Capstone 4's public API (capstone.h); every call fails or finds nothing.
CAPSTONE = Build("libcapstone", r"""
typedef unsigned long csh;
typedef unsigned long size_t;
enum { CS_ERR_ARCH = 2, CS_ERR_HANDLE = 3 };

unsigned int cs_version(int *major, int *minor)
{ if (major) *major = 0; if (minor) *minor = 0; return 0; }
int cs_support(int query) { (void)query; return 0; }
int cs_open(int arch, int mode, csh *handle)
{ (void)arch; (void)mode; if (handle) *handle = 0; return CS_ERR_ARCH; }
int cs_close(csh *handle) { (void)handle; return CS_ERR_HANDLE; }
int cs_option(csh handle, int type, size_t value)
{ (void)handle; (void)type; (void)value; return CS_ERR_HANDLE; }
int cs_errno(csh handle) { (void)handle; return CS_ERR_HANDLE; }
const char *cs_strerror(int code) { (void)code; return "no disassembler (microbox stub)"; }
size_t cs_disasm(csh handle, const unsigned char *code, size_t size, unsigned long address,
                 size_t count, void **insn)
{ (void)handle; (void)code; (void)size; (void)address; (void)count;
  if (insn) *insn = 0; return 0; }
size_t cs_disasm_ex(csh handle, const unsigned char *code, size_t size,
                    unsigned long address, size_t count, void **insn)
{ return cs_disasm(handle, code, size, address, count, insn); }
void cs_free(void *insn, size_t count) { (void)insn; (void)count; }
void *cs_malloc(csh handle) { (void)handle; return 0; }
int cs_disasm_iter(csh handle, const unsigned char **code, size_t *size,
                   unsigned long *address, void *insn)
{ (void)handle; (void)code; (void)size; (void)address; (void)insn; return 0; }
const char *cs_reg_name(csh handle, unsigned int id) { (void)handle; (void)id; return 0; }
const char *cs_insn_name(csh handle, unsigned int id) { (void)handle; (void)id; return 0; }
const char *cs_group_name(csh handle, unsigned int id) { (void)handle; (void)id; return 0; }
int cs_insn_group(csh handle, const void *insn, unsigned int id)
{ (void)handle; (void)insn; (void)id; return 0; }
int cs_reg_read(csh handle, const void *insn, unsigned int id)
{ (void)handle; (void)insn; (void)id; return 0; }
int cs_reg_write(csh handle, const void *insn, unsigned int id)
{ (void)handle; (void)insn; (void)id; return 0; }
int cs_op_count(csh handle, const void *insn, unsigned int type)
{ (void)handle; (void)insn; (void)type; return -1; }
int cs_op_index(csh handle, const void *insn, unsigned int type, unsigned int position)
{ (void)handle; (void)insn; (void)type; (void)position; return -1; }
int cs_regs_access(csh handle, const void *insn, void *read, unsigned char *nread,
                   void *write, unsigned char *nwrite)
{ (void)handle; (void)insn; (void)read; (void)write;
  if (nread) *nread = 0; if (nwrite) *nwrite = 0; return CS_ERR_HANDLE; }
""")

PMEM = Build("libpmem", r"""
typedef unsigned long size_t;

/* Write the cache lines of [addr, addr+len) back to memory, then order. */
static void flush(const void *addr, size_t len)
{
    unsigned long p = (unsigned long)addr & ~63UL, end = (unsigned long)addr + len;
    for (; p < end; p += 64)
        __asm__ volatile("clflush (%0)" : : "r"(p) : "memory");
    __asm__ volatile("sfence" : : : "memory");
}

void pmem_persist(const void *addr, size_t len) { flush(addr, len); }

void *pmem_memcpy_persist(void *dst, const void *src, size_t len)
{
    volatile char *d = dst;
    const char *s = src;
    for (size_t i = 0; i < len; i++)
        d[i] = s[i];
    flush(dst, len);
    return dst;
}
""", symbol_version="LIBPMEM_1.0")

BUILDS = (CAPSTONE, PMEM)
_BUILDS_ID = hashlib.sha256(repr(BUILDS).encode()).hexdigest()  # part of every cache key
_READY, _UNUSED = "ready", "unused"  # marker files: builds in use / QEMU keeps its own


def library_dir(qemu: str) -> Path | None:
    """The directory to put first on `qemu`'s library path (it holds our
    builds), made and checked on first use; None when `qemu` loads its own."""
    d = _dir(qemu)
    if d is None or (d / _UNUSED).exists():
        return None
    if (d / _READY).exists():
        return d
    try:
        return _make(qemu, d)
    except OSError:  # an unwritable cache: QEMU loads the system's libraries
        return None


def status(qemu: str) -> tuple[bool, str]:
    """Whether all is as it should be, and a sentence on which libraries
    `qemu` starts with; read-only (`doctor`): nothing is built."""
    d = _dir(qemu)
    if d is not None and (d / _READY).exists():
        return True, f"QEMU starts with microbox's {(d / _READY).read_text().strip()} ({d})"
    if d is not None and (d / _UNUSED).exists():
        return True, f"QEMU loads its own libraries: {(d / _UNUSED).read_text().strip()}"
    if _compiler() is None:
        return False, ("no C compiler to build microbox's libcapstone and libpmem: each "
                       "box's QEMU holds 2.2 MiB more and starts 5 ms later")
    return True, "microbox's libcapstone and libpmem are built when the first box starts"


def _dir(qemu: str) -> Path | None:
    """The cache directory of `qemu`'s builds (keyed by the binary and BUILDS)."""
    try:
        st = os.stat(qemu)
    except OSError:
        return None
    ident = f"{os.path.realpath(qemu)}\0{st.st_size}\0{st.st_mtime_ns}\0{_BUILDS_ID}"
    return paths.cache() / "vmm-lib" / hashlib.sha256(ident.encode()).hexdigest()[:16]


def _compiler() -> str | None:
    return shutil.which("cc") or shutil.which("gcc")


def _make(qemu: str, d: Path) -> Path | None:
    """Build and check into `d` (atomically: a racing process's result is as
    good as ours) each library `qemu` links that we have a build of. What QEMU
    starts with is recorded, or why nothing: once per QEMU binary. A missing
    compiler is not recorded (one may be installed later)."""
    cc = _compiler()
    if cc is None:
        return None
    d.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=d.parent, prefix=".build-"))
    try:
        needed = _needed(qemu)
        kept, why = [], []
        for build in BUILDS:
            soname = needed.get(build.library)
            if soname is None:
                why.append(f"QEMU links no {build.library}")
                continue
            failure = _build(cc, build, soname, work) or _check(qemu, build, work)
            if failure:
                (work / soname).unlink(missing_ok=True)
                why.append(failure)
            else:
                kept.append(build.library)
        for f in work.glob("*.[cv]"):
            f.unlink()
        if kept:
            (work / _READY).write_text(", ".join(kept) + "\n")
        else:
            (work / _UNUSED).write_text("; ".join(why) + "\n")
        with contextlib.suppress(OSError):  # another process published it first
            os.rename(work, d)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone once published
    return d if (d / _READY).exists() else None


def _needed(qemu: str) -> dict[str, str]:
    """The sonames `qemu` loads, by stem (libcapstone: libcapstone.so.4), from the
    dynamic loader's own trace (`-version` too: a static QEMU ignores the trace
    and must not start a VM)."""
    try:
        out = subprocess.run([qemu, "-version"],
                             env={**os.environ, "LD_TRACE_LOADED_OBJECTS": "1"},
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {m[1]: m[0] for m in re.findall(r"^\s*((lib[\w+-]+)\.so\.\d+)\s+=>", out, re.M)}


def _build(cc: str, build: Build, soname: str, work: Path) -> str | None:
    """Compile `build` into work/soname; the failure, if any."""
    src = work / f"{build.library}.c"
    src.write_text(build.source)
    argv = [cc, "-shared", "-fPIC", "-O2", "-nostdlib", f"-Wl,-soname,{soname}",
            "-o", str(work / soname), str(src)]
    if build.symbol_version:
        script = work / f"{build.library}.v"
        script.write_text(f"{build.symbol_version} {{ global: *; }};\n")
        argv.append(f"-Wl,--version-script={script}")
    return _failure(argv, {}, f"{cc} failed on {build.library}")


def _check(qemu: str, build: Build, work: Path) -> str | None:
    """QEMU starting with the builds in `work` (`build` the newest), every
    symbol bound; why not, if it does not."""
    return _failure([qemu, "-version"], {"LD_LIBRARY_PATH": str(work), "LD_BIND_NOW": "1"},
                    f"QEMU refused our {build.library}")


def _failure(argv: list[str], env: dict[str, str], what: str) -> str | None:
    """Run argv (with `env` added); a sentence if it did not succeed."""
    try:
        done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{what}: {exc}"
    if done.returncode != 0:
        return f"{what}: {done.stderr.strip()[:300]}"
    return None
