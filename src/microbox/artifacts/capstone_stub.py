"""A stub for the disassembler QEMU links, put first on the VMM's library path.

Debian's QEMU links libcapstone, a disassembler it uses only to print guest
code (`-d in_asm`, the monitor's `x/i`); microbox does neither. Loading it
still costs every VMM: the dynamic loader applies its 77,000 relocations
(1.7 ms of each QEMU start here) and each QEMU keeps its own 1.4 MiB copy of
the relocated tables, 4% of an idle clone's Pss (docs/snapshots.md). The stub
has the library's soname and API, and every call fails: QEMU then has no
disassembler, which it already handles.

The stub is built once per QEMU binary with the host's C compiler and checked
by starting that QEMU with it (`-version`: QEMU binds every symbol at load).
Without a compiler, or when QEMU links no capstone or refuses the stub, the
VMM loads the system library as before: nothing but memory depends on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from microbox import paths

# Capstone 4's public API (capstone.h); every call fails or finds nothing.
SOURCE = r"""
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
"""

_NEEDED = re.compile(r"^\s*(libcapstone\.so\.\d+)\s+=>", re.M)
_READY, _UNUSED = "ready", "unused"  # marker files: the stub works / QEMU keeps its own


def library_dir(qemu: str) -> Path | None:
    """The directory to put first on `qemu`'s library path (it holds the stub),
    built and checked on first use; None when `qemu` should load its own."""
    d = _dir(qemu)
    if d is None or (d / _UNUSED).exists():
        return None
    if (d / _READY).exists():
        return d
    try:
        return _make(qemu, d)
    except OSError:  # an unwritable cache: QEMU loads its own library
        return None


def status(qemu: str) -> tuple[bool, str]:
    """Whether `qemu` starts with the stub, and a sentence saying so or why
    not; read-only (`doctor`): nothing is built."""
    d = _dir(qemu)
    if d is not None and (d / _READY).exists():
        return True, f"QEMU starts with microbox's libcapstone stub ({d})"
    if d is not None and (d / _UNUSED).exists():
        return True, f"QEMU loads its own libcapstone: {(d / _UNUSED).read_text().strip()}"
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        return False, ("no C compiler to build the libcapstone stub: each box's QEMU holds "
                       "1.4 MiB more")
    return True, "the libcapstone stub is built when the first box starts"


def _dir(qemu: str) -> Path | None:
    """The cache directory of `qemu`'s stub (keyed by the binary and SOURCE)."""
    try:
        st = os.stat(qemu)
    except OSError:
        return None
    ident = f"{os.path.realpath(qemu)}\0{st.st_size}\0{st.st_mtime_ns}\0{SOURCE}"
    return paths.cache() / "vmm-lib" / hashlib.sha256(ident.encode()).hexdigest()[:16]


def _make(qemu: str, d: Path) -> Path | None:
    """Build and check the stub into `d` (atomically: a racing process's result
    is as good as ours). A reason to keep QEMU's own library is recorded, so
    it is found once per QEMU binary; a missing compiler is not (one may be
    installed later)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    d.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=d.parent, prefix=".build-"))
    try:
        soname = _capstone_soname(qemu)
        if soname is None:
            (work / _UNUSED).write_text("QEMU links no libcapstone\n")
        else:
            why = _build(cc, soname, work) or _check(qemu, work)
            (work / "stub.c").unlink()
            if why:
                (work / soname).unlink(missing_ok=True)
            (work / (_UNUSED if why else _READY)).write_text((why or soname) + "\n")
        with contextlib.suppress(OSError):  # another process published it first
            os.rename(work, d)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone once published
    return d if (d / _READY).exists() else None


def _capstone_soname(qemu: str) -> str | None:
    """The libcapstone soname `qemu` needs, from the dynamic loader's own trace
    (`-version` too: a static QEMU ignores the trace and must not start a VM)."""
    try:
        out = subprocess.run([qemu, "-version"],
                             env={**os.environ, "LD_TRACE_LOADED_OBJECTS": "1"},
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = _NEEDED.search(out)
    return m.group(1) if m else None


def _build(cc: str, soname: str, work: Path) -> str | None:
    """Compile the stub into work/soname; the failure, if any."""
    src = work / "stub.c"
    src.write_text(SOURCE)
    return _failure([cc, "-shared", "-fPIC", "-O2", "-nostdlib", f"-Wl,-soname,{soname}",
                     "-o", str(work / soname), str(src)], {}, f"{cc} failed")


def _check(qemu: str, work: Path) -> str | None:
    """QEMU starting with the stub; why not, if it does not."""
    return _failure([qemu, "-version"], {"LD_LIBRARY_PATH": str(work)},
                    "QEMU refused the stub")


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
