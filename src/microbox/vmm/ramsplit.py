"""A saved VM's whole migration stream split into its RAM, written into a
sparse file, and the stream of everything else: what QEMU writes itself when
that RAM is a shared memory-backend-file and `x-ignore-shared` is on. It is how
a snapshot gets its template form (`mem` and `state`) without a second QEMU
loading the stream and saving it again (docs/snapshots.md).

Only the stream QEMU 7.2 and 10.0 write for a stopped guest without any
migration capability but `events` is understood (the header, the
`configuration` section, the `ram` sections, then device sections left byte
for byte as they are); anything else is refused with VMError and nothing is
left behind. What differs between the two is read as it comes, not by
version: QEMU 10 puts a SWITCHOVER_START command (no payload) before RAM's
last section, and it is carried over as it is.

    header        be32 magic, be32 version
    configuration 0x07, be32 length, machine name, subsections (0x05 ...)
    ram START     0x01 section header; be64 size|MEM_SIZE; per block: name,
                  be64 length (+ be64 address with x-ignore-shared); be64 EOS
    ram PART/END  0x02/0x03, be32 id; pages: be64 offset|flags, [block name],
                  one fill byte (ZERO) or a page (PAGE); be64 EOS
    command       0x08, be16 command, be16 length (QEMU 10: SWITCHOVER_START, 0)
    footer        0x7e, be32 section id (after every section)
    the rest      device sections (0x04), EOF (0x00), the JSON description
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from pathlib import Path

from microbox.errors import VMError

MAGIC, VERSION = 0x5145564D, 3
CONFIGURATION, SUBSECTION, START, PART, END, FULL, EOF, COMMAND, FOOTER = (
    0x07, 0x05, 0x01, 0x02, 0x03, 0x04, 0x00, 0x08, 0x7E)
SWITCHOVER_START = 0x0B  # QEMU's MIG_CMD_SWITCHOVER_START
F_ZERO, F_MEM_SIZE, F_PAGE, F_EOS, F_CONTINUE = 0x02, 0x04, 0x08, 0x10, 0x20
PAGE = 4096  # x86's target page: the stream's offsets carry flags below it
IGNORE_SHARED = b"x-ignore-shared"
CAPABILITIES = b"configuration/capabilities"
PAGE_BITS = b"configuration/target-page-bits"
BIOS = b"pc.bios"  # mapped just below 4 GiB on x86
MACHINE_RAM = b"microvm.ram"  # the guest's RAM of a VMM without a memory backend
_U16, _U32, _U64 = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")
# A run of zero pages of the block read last: be64 offset|ZERO|CONTINUE (the
# offset's low 12 bits clear), then the fill byte 0. Most of a guest's RAM.
_ZERO_RUN = re.compile(rb"(?:.{6}[\x00\x10\x20\x30\x40\x50\x60\x70\x80\x90\xa0\xb0\xc0\xd0"
                       rb"\xe0\xf0]\x22\x00)*", re.DOTALL)


class Refused(VMError):
    pass


class _Reader:
    """The stream, mapped; what it takes is copied out (no view outlives it)."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos = buf, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise Refused("the saved state ends early")
        data = self.buf[self.pos:self.pos + n]
        self.pos += n
        return data

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])

    def name(self) -> bytes:
        return self.take(self.u8())

    def peek(self) -> int:
        return self.buf[self.pos] if self.pos < len(self.buf) else -1


def _name(b: bytes) -> bytes:
    return bytes([len(b)]) + b


class _Pages:
    """Pages of the split-off block, written into `fd` in runs of adjacent ones;
    the blocks the last page read and the last page kept belong to (a page
    without a block name belongs to the one before it, across sections too)."""

    def __init__(self, fd: int, block: bytes, blocks: dict[bytes, int]) -> None:
        self.fd, self.block, self.blocks = fd, block, blocks
        self.length = blocks[block]
        self.run: list[bytes] = []
        self.at = 0
        self.current: bytes | None = None
        self.last_kept: bytes | None = None
        self.records = 0  # of the block: a stopped guest's stream has each page once

    def put(self, offset: int, data: bytes) -> None:
        if offset + PAGE > self.length:
            raise Refused("the saved state has a page past the end of its RAM")
        if self.run and offset != self.at + PAGE * len(self.run):
            self.flush()
        if not self.run:
            self.at = offset
        self.run.append(data)

    def flush(self) -> None:
        at = self.at
        for i in range(0, len(self.run), 256):  # IOV_MAX is 1024
            chunk = self.run[i:i + 256]
            want = PAGE * len(chunk)
            if os.pwritev(self.fd, chunk, at) != want:
                raise VMError("a short write to the snapshot's memory file")
            at += want
        self.run = []


def split(full: Path, block: str, mem: Path, state: Path) -> None:
    """Write the guest's RAM, the block `block` of the stream in `full` (or the
    machine's own, MACHINE_RAM, of a VMM booted without a memory backend),
    into the new sparse file `mem` (its pages at their offsets, zero pages left
    as holes) and the rest of the stream into the new file `state`, where the
    RAM is named `block`, as the VMMs that restore it name theirs."""
    made: list[Path] = []
    try:
        with open(full, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise Refused("the saved state is empty")
            m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        with m:
            fd = os.open(mem, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            made.append(mem)
            try:
                out = _split(_Reader(m), block.encode(), fd)
            finally:
                os.close(fd)
        with open(state, "xb") as s:
            made.append(state)
            s.write(b"".join(out))
    except BaseException as exc:
        for p in made:
            p.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise VMError(f"cannot split the saved state {full}: {exc.strerror}") from None
        raise


def _split(r: _Reader, block: bytes, fd: int) -> list[bytes]:
    if r.u32() != MAGIC or r.u32() != VERSION:
        raise Refused("the saved state is not a QEMU migration stream of version 3")
    out: list[bytes] = [_U32.pack(MAGIC) + _U32.pack(VERSION)]
    out.append(_configuration(r))
    sid, blocks, source = _ram_start(r, block, out)
    pages = _Pages(fd, source, blocks)
    os.ftruncate(fd, blocks[source])
    while r.peek() in (PART, END, COMMAND):
        if r.peek() == COMMAND:
            out.append(_command(r))
            continue
        kind = r.u8()
        if r.u32() != sid:
            raise Refused("the saved state has a section other than RAM between RAM's")
        out.append(bytes([kind]) + _U32.pack(sid))
        out.append(_ram_pages(r, pages))
        _footer(r, sid, out)
        if kind == END:
            break
    else:
        raise Refused("the saved state's RAM has no end section")
    pages.flush()
    if pages.records != pages.length // PAGE:
        raise Refused("the saved state does not hold each page of its RAM once")
    if r.peek() not in (FULL, EOF, COMMAND):
        raise Refused("the saved state goes on with an unknown section after its RAM")
    out.append(r.take(len(r.buf) - r.pos))  # the devices, byte for byte
    return out


def _configuration(r: _Reader) -> bytes:
    """The configuration section, with x-ignore-shared among the capabilities
    the loading side must have on (as QEMU writes it with that capability)."""
    if r.u8() != CONFIGURATION:
        raise Refused("the saved state has no configuration section")
    machine = r.take(r.u32())
    out = bytes([CONFIGURATION]) + _U32.pack(len(machine)) + machine
    while r.peek() == SUBSECTION:
        r.u8()
        name, version = r.name(), r.u32()
        if name != PAGE_BITS:
            raise Refused(f"the saved state's configuration has {name.decode(errors='replace')}")
        out += bytes([SUBSECTION]) + _name(name) + _U32.pack(version) + _U32.pack(r.u32())
    return out + (bytes([SUBSECTION]) + _name(CAPABILITIES) + _U32.pack(1)
                  + _U32.pack(1) + _name(IGNORE_SHARED))


def _ram_start(r: _Reader, block: bytes,
               out: list[bytes]) -> tuple[int, dict[bytes, int], bytes]:
    """The RAM setup section: its blocks and lengths, copied with the address
    of each, which x-ignore-shared adds (QEMU checks it for the shared one),
    and the guest's RAM renamed `block`. Returns the section's id, the blocks
    and the name the guest's RAM has in the stream."""
    if r.u8() != START:
        raise Refused("the saved state does not start with its RAM")
    sid, idstr, instance, version = r.u32(), r.name(), r.u32(), r.u32()
    if idstr != b"ram":
        raise Refused(f"the saved state starts with {idstr.decode(errors='replace')}, not RAM")
    size = r.u64()
    if not size & F_MEM_SIZE:
        raise Refused("the saved state's RAM has no size")
    total = size & ~(PAGE - 1)
    head = (bytes([START]) + _U32.pack(sid) + _name(idstr) + _U32.pack(instance)
            + _U32.pack(version) + _U64.pack(size))
    blocks: dict[bytes, int] = {}
    source = b""
    while sum(blocks.values()) < total:
        name, length = r.name(), r.u64()
        if name in blocks:
            raise Refused("the saved state declares a RAM block twice")
        if name in (block, MACHINE_RAM) and not source:
            source, named, addr = name, block, 0
        elif name == BIOS:
            named, addr = name, (1 << 32) - length
        else:
            raise Refused("the saved state has an unknown RAM block "
                          f"{name.decode(errors='replace')}")
        blocks[name] = length
        head += _name(named) + _U64.pack(length) + _U64.pack(addr)
    if sum(blocks.values()) != total or r.u64() != F_EOS:
        raise Refused("the saved state's RAM blocks do not add up to its size")
    if not source:
        raise Refused("the saved state has no guest RAM")
    out.append(head + _U64.pack(F_EOS))
    _footer(r, sid, out)
    return sid, blocks, source


def _ram_pages(r: _Reader, pages: _Pages) -> bytes:
    """One RAM section's pages: the split-off block's go to `pages`, the others'
    stay (each naming its block again where the one before it went). The loop
    reads the map in place: a quarter of a million records pass through it."""
    buf, pos, end = r.buf, r.pos, len(r.buf)
    unpack = _U64.unpack_from
    kept = bytearray()
    try:
        while True:
            if pages.current == pages.block:
                run = _ZERO_RUN.match(buf, pos).end()  # type: ignore[union-attr]
                pages.records += (run - pos) // 9
                pos = run
            (word,) = unpack(buf, pos)
            pos += 8
            flags, offset = word & (PAGE - 1), word & ~(PAGE - 1)
            if flags == F_EOS:
                r.pos = pos
                return bytes(kept + _U64.pack(F_EOS))
            kind = flags & (F_ZERO | F_PAGE)
            if flags & ~(F_ZERO | F_PAGE | F_CONTINUE) or kind in (0, F_ZERO | F_PAGE):
                raise Refused(f"the saved state has RAM pages of a kind not handled "
                              f"(flags {flags:#x})")
            if not flags & F_CONTINUE:
                n = buf[pos]
                pages.current = buf[pos + 1:pos + 1 + n]
                pos += 1 + n
                if pages.current not in pages.blocks:
                    raise Refused("the saved state has pages of a RAM block it did not declare")
            elif pages.current is None:
                raise Refused("the saved state's first page names no RAM block")
            size = 1 if kind == F_ZERO else PAGE
            if pos + size > end:
                raise Refused("the saved state ends early")
            if pages.current == pages.block:
                pages.records += 1
                if kind == F_PAGE:
                    pages.put(offset, buf[pos:pos + PAGE])
                elif buf[pos]:
                    pages.put(offset, buf[pos:pos + 1] * PAGE)
                pos += size
                continue  # a zero page stays a hole
            if pages.current == pages.last_kept:
                kept += _U64.pack(offset | flags | F_CONTINUE)
            else:
                kept += _U64.pack(offset | (flags & ~F_CONTINUE)) + _name(pages.current)
            kept += buf[pos:pos + size]
            pos += size
            pages.last_kept = pages.current
    except (struct.error, IndexError):
        raise Refused("the saved state ends early") from None


def _command(r: _Reader) -> bytes:
    """A command between RAM's sections, carried over: only QEMU 10's
    SWITCHOVER_START, which has no payload, is known."""
    r.u8()
    command, length = _U16.unpack(r.take(2))[0], _U16.unpack(r.take(2))[0]
    if command != SWITCHOVER_START or length:
        raise Refused(f"the saved state has a migration command not handled ({command:#x})")
    return bytes([COMMAND]) + _U16.pack(command) + _U16.pack(length)


def _footer(r: _Reader, sid: int, out: list[bytes]) -> None:
    if r.u8() != FOOTER or r.u32() != sid:
        raise Refused("the saved state has a section without its footer")
    out.append(bytes([FOOTER]) + _U32.pack(sid))
