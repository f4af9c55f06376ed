"""vmm/ramsplit.py on streams built here in QEMU 7.2's layout (tests/vm/
test_ramsplit.py checks a real box's against QEMU's own split): where each
page goes, how block names are carried, and refusals that leave nothing."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from microbox.vmm import ramsplit as rs

P = rs.PAGE
DEVICES = bytes([rs.FULL]) + b"\x00\x00\x00\x05" + b"\x05timer" + b"\x00" * 8 + b"devstate" \
    + bytes([rs.FOOTER]) + b"\x00\x00\x00\x05" + bytes([rs.EOF])


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def u64(v: int) -> bytes:
    return struct.pack(">Q", v)


def name(s: bytes) -> bytes:
    return bytes([len(s)]) + s


def config(*subs: bytes) -> bytes:
    return bytes([rs.CONFIGURATION]) + u32(7) + b"microvm" + b"".join(subs)


def start(addrs: bool = False, ram: bytes = b"mem0") -> bytes:
    blocks = [(ram, 4 * P, 0), (b"pc.bios", 2 * P, (1 << 32) - 2 * P)]
    body = u64(6 * P | rs.F_MEM_SIZE) + b"".join(
        name(n) + u64(ln) + (u64(a) if addrs else b"") for n, ln, a in blocks)
    return (bytes([rs.START]) + u32(2) + name(b"ram") + u32(0) + u32(4) + body
            + u64(rs.F_EOS) + bytes([rs.FOOTER]) + u32(2))


def section(kind: int, records: bytes) -> bytes:
    return bytes([kind]) + u32(2) + records + u64(rs.F_EOS) + bytes([rs.FOOTER]) + u32(2)


def page(offset: int, fill: int, block: bytes | None) -> bytes:
    flags = rs.F_PAGE | (0 if block else rs.F_CONTINUE)
    return u64(offset | flags) + (name(block) if block else b"") + bytes([fill]) * P


def zero(offset: int, block: bytes | None) -> bytes:
    flags = rs.F_ZERO | (0 if block else rs.F_CONTINUE)
    return u64(offset | flags) + (name(block) if block else b"") + b"\x00"


HEADER = u32(rs.MAGIC) + u32(rs.VERSION)
CAPS = bytes([rs.SUBSECTION]) + name(rs.CAPABILITIES) + u32(1) + u32(1) + name(rs.IGNORE_SHARED)
PART = section(rs.PART, page(0, 1, b"mem0") + zero(P, None) + page(0, 7, b"pc.bios"))
END = section(rs.END, zero(2 * P, b"mem0") + page(3 * P, 2, None) + zero(P, b"pc.bios"))
STREAM = HEADER + config() + start() + PART + END + DEVICES


def split(tmp: Path, stream: bytes) -> tuple[Path, Path]:
    (tmp / "full").write_bytes(stream)
    rs.split(tmp / "full", "mem0", tmp / "mem", tmp / "state")
    return tmp / "mem", tmp / "state"


def test_the_blocks_pages_go_to_the_file_and_the_rest_stays(tmp_path: Path) -> None:
    mem, state = split(tmp_path, STREAM)
    assert mem.read_bytes() == b"\x01" * P + b"\x00" * 2 * P + b"\x02" * P
    assert state.read_bytes() == (
        HEADER + config(CAPS) + start(addrs=True)
        + section(rs.PART, page(0, 7, b"pc.bios"))  # named: the block before it went
        + section(rs.END, zero(P, None)) + DEVICES)  # the same block as the last kept


def test_a_page_named_by_continuation_across_sections(tmp_path: Path) -> None:
    part = section(rs.PART, page(0, 1, b"mem0") + zero(P, None))
    end = section(rs.END, zero(2 * P, None) + page(3 * P, 3, None)
                  + page(0, 5, b"pc.bios") + page(P, 6, None))
    mem, state = split(tmp_path, HEADER + config() + start() + part + end + DEVICES)
    assert mem.read_bytes()[3 * P:] == b"\x03" * P
    assert state.read_bytes().endswith(
        section(rs.END, page(0, 5, b"pc.bios") + page(P, 6, None)) + DEVICES)


def test_a_vmms_own_ram_is_split_and_named_as_clones_name_theirs(tmp_path: Path) -> None:
    """A box booted cold has no memory backend: QEMU calls its RAM microvm.ram."""
    own = (HEADER + config() + start(ram=b"microvm.ram")
           + PART.replace(b"\x04mem0", b"\x0bmicrovm.ram")
           + END.replace(b"\x04mem0", b"\x0bmicrovm.ram") + DEVICES)
    mem, state = split(tmp_path, own)
    assert mem.read_bytes() == b"\x01" * P + b"\x00" * 2 * P + b"\x02" * P
    assert state.read_bytes().startswith(HEADER + config(CAPS) + start(addrs=True))


@pytest.mark.parametrize("stream, says", [
    (STREAM[:-len(DEVICES) - 40], "ends early"),
    (STREAM.replace(b"QEVM", b"QEVX", 1), "not a QEMU migration stream"),
    (HEADER + config(bytes([rs.SUBSECTION]) + name(rs.CAPABILITIES) + u32(1) + u32(0))
     + start() + PART + END + DEVICES, "configuration has configuration/capabilities"),
    (HEADER + config() + start() + PART.replace(b"\x07pc.bios", b"\x07pc.biox") + END
     + DEVICES, "did not declare"),
    (HEADER + config() + start() + section(rs.PART, page(0, 1, b"mem0")) + END + DEVICES,
     "each page of its RAM once"),
    (HEADER + config() + start() + PART + PART + END + DEVICES, "each page of its RAM once"),
    (HEADER + config() + start() + section(rs.PART, u64(0x40) + name(b"mem0")) + END
     + DEVICES, "not handled"),
    (HEADER + config() + start() + section(rs.PART, page(4 * P, 1, b"mem0")) + END + DEVICES,
     "past the end"),
    (HEADER + config() + start() + PART + DEVICES, "no end section"),
    (HEADER + config() + start() + PART + END + b"\x09", "unknown section after"),
    (b"", "empty"),
    (HEADER + config() + start().replace(b"\x07pc.bios", b"\x0bmicrovm.ram") + PART + END
     + DEVICES, "unknown RAM block microvm.ram"),  # a second guest RAM
    (HEADER + config() + start(ram=b"pc.ram") + PART + END + DEVICES,
     "unknown RAM block pc.ram"),
])
def test_refusals_leave_nothing(tmp_path: Path, stream: bytes, says: str) -> None:
    with pytest.raises(rs.Refused, match=says):
        split(tmp_path, stream)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


def command(cmd: int, payload: bytes = b"") -> bytes:
    return bytes([rs.COMMAND]) + struct.pack(">HH", cmd, len(payload)) + payload


def test_qemu_10s_switchover_start_before_the_last_section_is_carried_over(
        tmp_path: Path) -> None:
    """QEMU 10 sends MIG_CMD_SWITCHOVER_START between RAM's last PART and its
    END; QEMU 7.2's stream has none. Each is split the same."""
    switch = command(rs.SWITCHOVER_START)
    mem, state = split(tmp_path, HEADER + config() + start() + PART + switch + END + DEVICES)
    assert mem.read_bytes() == b"\x01" * P + b"\x00" * 2 * P + b"\x02" * P
    assert state.read_bytes() == (
        HEADER + config(CAPS) + start(addrs=True)
        + section(rs.PART, page(0, 7, b"pc.bios")) + switch
        + section(rs.END, zero(P, None)) + DEVICES)


@pytest.mark.parametrize("cmd", [command(2, b"\x00\x00\x00\x01"), command(rs.SWITCHOVER_START,
                                                                          b"x")])
def test_another_command_among_the_ram_sections_is_refused(tmp_path: Path, cmd: bytes) -> None:
    with pytest.raises(rs.Refused, match="migration command not handled"):
        split(tmp_path, HEADER + config() + start() + PART + cmd + END + DEVICES)
    assert not (tmp_path / "mem").exists() and not (tmp_path / "state").exists()
