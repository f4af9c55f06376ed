"""`microbox cp` without a VM: hostile tars from a "box" extracted on the host,
the host tree as a tar, and Docker's destination rules over a fake transport
whose "guest" is a scratch directory."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tarfile
import tracemalloc
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from click.testing import CliRunner

from microbox.agent import bulk as transport
from microbox.agent import ops
from microbox.cli.main import cli
from microbox.cp import extract as ex
from microbox.cp import transfer
from microbox.cp.chunks import ChunkReader
from microbox.cp.report import CopyReport
from microbox.cp.tarwrite import tree_tar
from microbox.errors import AgentError, GuestNotFound, HostError, MicroboxError, Refused, UsageError
from tests.trees import snapshot

# The stand-in guest extracts with tarfile's "tar" filter where Python has it
# (3.11.4 and later); Debian 12's python3 is 3.11.2, which has no filter argument.
SAFE_EXTRACT: dict[str, Any] = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}

# -- helpers -----------------------------------------------------------------------


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", *,
           mode: int = 0o644, mtime: float = 1_600_000_000, link: str = "") -> tuple[
               tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def d(name: str, mode: int = 0o755, mtime: float = 1_600_000_000) -> tuple[tarfile.TarInfo, bytes]:
    return member(name, tarfile.DIRTYPE, mode=mode, mtime=mtime)


def sym(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return member(name, tarfile.SYMTYPE, link=target)


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return member(name, tarfile.LNKTYPE, link=target)


def make_tar(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def chunked(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


class Scratch:
    """tmp/dest (where copies go), tmp/outside (a target for hostile symlinks) and
    a check that nothing but dest changed."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp
        self.dest = tmp / "dest"
        self.outside = tmp / "outside"
        self.dest.mkdir()
        self.outside.mkdir()
        (self.outside / "keep").write_bytes(b"precious")
        self.before = snapshot(tmp, skip="dest")

    def untouched(self) -> None:
        assert snapshot(self.root, skip="dest") == self.before

    def extract(self, data: bytes, name: str | None = "top") -> CopyReport:
        report = CopyReport()
        ex.extract(ChunkReader(chunked(data)), lambda _top: ex.Target(str(self.dest), name),
                   report)
        return report


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Scratch]:
    s = Scratch(tmp_path)
    yield s
    s.untouched()
    for dirpath, dirnames, _ in os.walk(tmp_path):  # let pytest remove read-only dirs
        for n in dirnames:
            with contextlib.suppress(OSError):  # too long a path: left to rmtree
                if not os.path.islink(Path(dirpath, n)):
                    os.chmod(Path(dirpath, n), 0o755)


def one_sentence(err: MicroboxError) -> str:
    text = str(err)
    assert "\n" not in text and text.endswith(".") and ". " not in text, text
    return text


# -- hostile tars --------------------------------------------------------------------


def test_absolute_name_is_refused(scratch: Scratch) -> None:
    data = make_tar(d("top"), member("/" + str(scratch.outside / "abs"), data=b"x"))
    with pytest.raises(Refused) as err:
        scratch.extract(data)
    assert "an absolute name" in one_sentence(err.value)


@pytest.mark.parametrize("name", ["top/../evil", "top/a/../../evil", "../evil", "top/.."])
def test_dotdot_is_refused(scratch: Scratch, name: str) -> None:
    data = make_tar(d("top"), d("top/a"), member(name, data=b"x"))
    with pytest.raises(Refused) as err:
        scratch.extract(data)
    assert "'..'" in one_sentence(err.value)
    assert not (scratch.root / "evil").exists()


def test_a_file_through_a_symlink_the_copy_made_is_refused(scratch: Scratch) -> None:
    data = make_tar(d("top"), sym("top/link", str(scratch.outside)),
                    member("top/link/pwned", data=b"x"))
    with pytest.raises(Refused) as err:
        scratch.extract(data)
    one_sentence(err.value)
    assert list(scratch.dest.iterdir()) == []  # the new tree, link and all, is gone


def test_a_relative_symlink_up_and_out_is_never_followed(scratch: Scratch) -> None:
    data = make_tar(d("top"), sym("top/up", "../../../../../../../.."),
                    member("top/up/tmp/pwned", data=b"x"))
    with pytest.raises(Refused):
        scratch.extract(data)


def test_a_symlink_swapped_for_a_directory_name_is_refused(scratch: Scratch) -> None:
    data = make_tar(d("top"), sym("top/d", str(scratch.outside)), d("top/d"),
                    member("top/d/pwned", data=b"x"))
    with pytest.raises(Refused) as err:
        scratch.extract(data)
    assert "symlink or a file" in one_sentence(err.value)


def test_a_file_then_a_name_under_it_is_refused(scratch: Scratch) -> None:
    data = make_tar(d("top"), member("top/f", data=b"x"), member("top/f/g", data=b"y"))
    with pytest.raises(Refused):
        scratch.extract(data)


def test_a_symlink_replaced_by_a_file_is_replaced_not_followed(scratch: Scratch) -> None:
    target = scratch.outside / "keep"
    data = make_tar(d("top"), sym("top/f", str(target)), member("top/f", data=b"new"))
    scratch.extract(data)
    f = scratch.dest / "top" / "f"
    assert not f.is_symlink() and f.read_bytes() == b"new"


def test_an_existing_user_symlink_is_replaced_not_followed(scratch: Scratch) -> None:
    (scratch.dest / "top").mkdir()
    (scratch.dest / "top" / "f").symlink_to(scratch.outside / "keep")
    scratch.extract(make_tar(d("top"), member("top/f", data=b"new")))
    assert (scratch.dest / "top" / "f").read_bytes() == b"new"


def test_a_file_never_replaces_a_directory(scratch: Scratch) -> None:
    (scratch.dest / "top" / "sub").mkdir(parents=True)
    (scratch.dest / "top" / "sub" / "mine").write_bytes(b"mine")
    with pytest.raises(Refused) as err:
        scratch.extract(make_tar(d("top"), member("top/sub", data=b"x")))
    one_sentence(err.value)
    assert (scratch.dest / "top" / "sub" / "mine").read_bytes() == b"mine"
    assert [p.name for p in (scratch.dest / "top").iterdir()] == ["sub"]  # no temp left


def test_hard_link_to_a_host_file_is_refused(scratch: Scratch) -> None:
    data = make_tar(d("top"), hard("top/passwd", "/etc/passwd"))
    with pytest.raises(Refused):
        scratch.extract(data)
    data = make_tar(d("top"), hard("top/keep", "../outside/keep"))
    with pytest.raises(Refused):
        scratch.extract(data)
    assert not (scratch.dest / "top" / "passwd").exists()


def test_hard_link_through_a_symlink_is_refused(scratch: Scratch) -> None:
    data = make_tar(d("top"), sym("top/l", str(scratch.outside)), hard("top/h", "top/l/keep"))
    with pytest.raises(Refused):
        scratch.extract(data)
    data = make_tar(d("top"), sym("top/l", str(scratch.outside / "keep")), hard("top/h", "top/l"))
    with pytest.raises(Refused):
        scratch.extract(data)


def test_hard_link_inside_the_copy_becomes_a_copy(scratch: Scratch) -> None:
    data = make_tar(d("top"), member("top/f", data=b"same", mode=0o640), hard("top/h", "top/f"))
    report = scratch.extract(data)
    f, h = scratch.dest / "top" / "f", scratch.dest / "top" / "h"
    assert h.read_bytes() == b"same" and f.stat().st_ino != h.stat().st_ino
    assert report.hardlinks == 1


def test_very_long_component_is_refused(scratch: Scratch) -> None:
    with pytest.raises(Refused) as err:
        scratch.extract(make_tar(d("top"), member("top/" + "a" * 300, data=b"x")))
    assert "over 255 bytes" in one_sentence(err.value)


def test_very_long_path_is_walked_one_component_at_a_time(scratch: Scratch) -> None:
    deep = "/".join(["b" * 200] * 25)  # 5,000 bytes: over PATH_MAX, each part fine
    scratch.extract(make_tar(d("top"), member(f"top/{deep}/f", data=b"deep")))
    fd = os.open(scratch.dest / "top", os.O_RDONLY)
    try:
        for _ in range(25):
            nxt = os.open("b" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        f = os.open("f", os.O_RDONLY, dir_fd=fd)
        assert os.read(f, 10) == b"deep"
        os.close(f)
    finally:
        os.close(fd)


def test_entries_outside_the_top_are_refused(scratch: Scratch) -> None:
    with pytest.raises(Refused) as err:
        scratch.extract(make_tar(d("top"), member("other/f", data=b"x")))
    assert "outside the copied path" in one_sentence(err.value)


def test_the_top_entry_cannot_replace_the_destination(scratch: Scratch) -> None:
    with pytest.raises(Refused):
        scratch.extract(make_tar(d("top"), member("top", data=b"x")), name=None)


def test_huge_and_global_headers_are_refused(scratch: Scratch) -> None:
    long_name = "top/" + "/".join(["c" * 200] * 400)  # an 80 KB PAX path record
    with pytest.raises(Refused):
        scratch.extract(make_tar(d("top"), member(long_name, data=b"x")))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "global"}) as tar:
        tar.addfile(d("top")[0])
    with pytest.raises(Refused):
        scratch.extract(buf.getvalue())


def test_a_malformed_tar_is_one_sentence(scratch: Scratch) -> None:
    data = make_tar(d("top"), member("top/f", data=b"x" * 5000))
    with pytest.raises(MicroboxError) as err:
        scratch.extract(data[:1536 + 700])  # cut inside the file's data
    one_sentence(err.value)


def test_devices_and_fifos_are_skipped_and_counted(scratch: Scratch) -> None:
    data = make_tar(d("top"), member("top/null", tarfile.CHRTYPE),
                    member("top/fifo", tarfile.FIFOTYPE), member("top/f", data=b"x"))
    report = scratch.extract(data)
    assert report.skipped == 2 and report.files == 1
    assert sorted(p.name for p in (scratch.dest / "top").iterdir()) == ["f"]


# -- what a copy keeps -----------------------------------------------------------------


def test_modes_mtimes_and_symlinks_are_kept_setid_dropped(scratch: Scratch) -> None:
    data = make_tar(d("top", mode=0o750, mtime=1_500_000_000),
                    d("top/ro", mode=0o555, mtime=1_400_000_000),
                    member("top/ro/x", data=b"x", mode=0o755, mtime=1_300_000_000.5),
                    member("top/secret", data=b"s", mode=0o600),
                    member("top/suid", data=b"s", mode=0o4755),
                    sym("top/abs", "/etc/passwd"), sym("top/rel", "../../x"))
    report = scratch.extract(data)
    top = scratch.dest / "top"
    assert stat.S_IMODE(top.stat().st_mode) == 0o750
    assert top.stat().st_mtime == 1_500_000_000
    assert stat.S_IMODE((top / "ro").stat().st_mode) == 0o555
    assert (top / "ro").stat().st_mtime == 1_400_000_000
    assert stat.S_IMODE((top / "ro" / "x").stat().st_mode) == 0o755
    assert (top / "ro" / "x").stat().st_mtime == pytest.approx(1_300_000_000.5)
    assert stat.S_IMODE((top / "secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((top / "suid").stat().st_mode) == 0o755
    assert os.readlink(top / "abs") == "/etc/passwd"
    assert os.readlink(top / "rel") == "../../x"
    assert (report.files, report.dirs, report.symlinks) == (3, 2, 2)


def test_mtimes_keep_their_nanoseconds(scratch: Scratch) -> None:
    info, data = member("top", data=b"x")
    info.pax_headers = {"mtime": "1700000000.123456789"}
    scratch.extract(make_tar((info, data)))
    assert (scratch.dest / "top").stat().st_mtime_ns == 1_700_000_000_123_456_789
    assert ex.mtime_ns(tarfile.TarInfo("x")) == 0


def test_an_existing_directory_keeps_its_mode(scratch: Scratch) -> None:
    (scratch.dest / "top").mkdir(mode=0o700)
    scratch.extract(make_tar(d("top", mode=0o777), member("top/f", data=b"x")))
    assert stat.S_IMODE((scratch.dest / "top").stat().st_mode) == 0o700


def test_memory_stays_bounded_for_a_large_file(scratch: Scratch) -> None:
    size = 64 << 20
    header = member("top", data=b"")[0]
    header.size = size

    def stream() -> Iterator[bytes]:
        yield header.tobuf(tarfile.PAX_FORMAT)
        zero = b"\0" * (1 << 20)
        for _ in range(size >> 20):
            yield zero
        yield b"\0" * 1024

    tracemalloc.start()
    try:
        ex.extract(ChunkReader(stream()), lambda _t: ex.Target(str(scratch.dest), "big"),
                   CopyReport())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (scratch.dest / "big").stat().st_size == size
    assert peak < 8 << 20


# -- landing whole ------------------------------------------------------------------------


def cut(data: bytes, member_name: str) -> bytes:
    """`data` cut 700 bytes into the contents of its member `member_name`."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return data[:tar.getmember(member_name).offset_data + 700]


def test_a_file_is_never_seen_half_written_under_its_name(scratch: Scratch) -> None:
    size = 3 << 20
    header = member("big", data=b"")[0]
    header.size = size
    seen: list[list[str]] = []

    def stream() -> Iterator[bytes]:
        yield header.tobuf(tarfile.PAX_FORMAT)
        for i in range(size >> 20):
            if i == 2:  # a MiB and more is written by now
                seen.append(os.listdir(scratch.dest))
            yield b"x" * (1 << 20)
        yield b"\0" * 1024

    ex.extract(ChunkReader(stream()), lambda _t: ex.Target(str(scratch.dest), "big"),
               CopyReport())
    (during,) = seen
    assert len(during) == 1 and during[0].startswith(".big.microbox-cp-"), during
    assert os.listdir(scratch.dest) == ["big"] and (scratch.dest / "big").stat().st_size == size


def test_a_cut_file_leaves_no_trace_and_an_old_file_its_content(scratch: Scratch) -> None:
    data = cut(make_tar(member("top", data=b"n" * 5000)), "top")
    with pytest.raises(MicroboxError) as err:
        scratch.extract(data)
    assert "malformed tar" in one_sentence(err.value)
    assert list(scratch.dest.iterdir()) == []
    (scratch.dest / "top").write_bytes(b"old")
    with pytest.raises(MicroboxError):
        scratch.extract(data)
    assert os.listdir(scratch.dest) == ["top"] and (scratch.dest / "top").read_bytes() == b"old"


@pytest.mark.parametrize("depth", [1, 1500])  # deeper than Python's recursion limit
def test_a_new_tree_appears_whole_or_not_at_all(scratch: Scratch, depth: int) -> None:
    deep = "/".join(["d"] * depth)  # directories the tar does not list: made on the way
    data = make_tar(d("top", mode=0o555), member("top/first", data=b"1"), d("top/ro", mode=0o555),
                    member(f"top/{deep}/f", data=b"f"), member("top/last", data=b"l" * 5000))
    with pytest.raises(MicroboxError):
        scratch.extract(cut(data, "top/last"))
    assert list(scratch.dest.iterdir()) == []
    with pytest.raises(Refused):  # a hostile entry after a whole subtree
        scratch.extract(make_tar(d("top"), member("top/ok", data=b"1"), member("/abs", data=b"x")))
    assert list(scratch.dest.iterdir()) == []


def test_into_an_existing_directory_the_tar_is_merged_each_file_whole(scratch: Scratch) -> None:
    (scratch.dest / "top").mkdir()
    (scratch.dest / "top" / "mine").write_bytes(b"mine")
    (scratch.dest / "top" / "b").write_bytes(b"old b")
    data = make_tar(d("top"), member("top/a", data=b"a"), member("top/b", data=b"b" * 5000))
    with pytest.raises(MicroboxError):
        scratch.extract(cut(data, "top/b"))
    assert sorted(os.listdir(scratch.dest / "top")) == ["a", "b", "mine"]
    assert (scratch.dest / "top" / "b").read_bytes() == b"old b"
    scratch.extract(data)
    assert (scratch.dest / "top" / "b").read_bytes() == b"b" * 5000
    assert sorted(os.listdir(scratch.dest / "top")) == ["a", "b", "mine"]


def test_temporary_names_are_hidden_and_say_what_they_hold() -> None:
    assert ex.temp_name("report.pdf").startswith(".report.pdf.microbox-cp-")
    long = ex.temp_name("é" * 127)  # 254 bytes
    assert long.startswith(".é") and len(os.fsencode(long)) <= ex.NAME_MAX
    assert ex.components(long) == (long,)


# -- the host tree as a tar --------------------------------------------------------------


def make_tree(root: Path) -> Path:
    src = root / "src"
    (src / "sub").mkdir(parents=True)
    (src / "exe").write_bytes(b"#!/bin/sh\n")
    (src / "exe").chmod(0o755)
    (src / "secret").write_bytes(b"s")
    (src / "secret").chmod(0o600)
    (src / "sub" / "f").write_bytes(b"f" * 70_000)
    os.link(src / "sub" / "f", src / "hard")
    (src / "link").symlink_to("sub/f")
    (src / "dangling").symlink_to("/nowhere")
    os.mkfifo(src / "fifo")
    os.utime(src / "secret", ns=(1_234_567_890_123_456_789, 1_234_567_890_123_456_789))
    return src


def test_tree_tar_round_trip(tmp_path: Path) -> None:
    src = make_tree(tmp_path)
    sent = CopyReport()
    data = b"".join(tree_tar(str(src), "copy", sent))
    assert sent.skipped == 1  # the fifo
    dest = tmp_path / "dest"
    dest.mkdir()
    ex.extract(ChunkReader(chunked(data, 4096)), lambda _t: ex.Target(str(dest), "copy"),
               CopyReport())
    out = dest / "copy"
    assert stat.S_IMODE((out / "exe").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "secret").stat().st_mode) == 0o600
    assert (out / "secret").stat().st_mtime_ns == 1_234_567_890_123_456_789
    assert (out / "hard").read_bytes() == (out / "sub" / "f").read_bytes()
    assert os.readlink(out / "link") == "sub/f"
    assert os.readlink(out / "dangling") == "/nowhere"
    assert not (out / "fifo").exists()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert {m.uid for m in tar} == {0}


def test_tree_tar_streams_in_bounded_memory(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(64 << 20)
    tracemalloc.start()
    try:
        total = sum(len(c) for c in tree_tar(str(big), "big", CopyReport()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total > 64 << 20 and peak < 4 << 20


# -- Docker's rules over a fake transport ----------------------------------------------


class FakeGuest:
    """A "box" whose file system is a host directory (trusted, for the rules)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        root.mkdir()
        monkeypatch.setattr(transport, "tar_get", self.tar_get)
        monkeypatch.setattr(transport, "tar_put", self.tar_put)
        monkeypatch.setattr(ops, "get_file", self.get_file)

    def real(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def tar_get(self, _channel: object, path: str) -> Iterator[bytes]:
        p = self.real(path)
        if not os.path.lexists(p):
            raise GuestNotFound(f"reading {path} failed in the box (not_found)")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(p, arcname=os.path.basename(path) or ".")
        yield from chunked(buf.getvalue(), 65536)

    def tar_put(self, _channel: object, path: str, chunks: Iterable[bytes]) -> None:
        p = self.real(path)
        if not p.exists():
            raise GuestNotFound(f"writing a tree into {path} failed in the box (not_found)")
        if not p.is_dir():
            raise AgentError(f"writing a tree into {path} failed in the box (invalid)")
        with tarfile.open(fileobj=ChunkReader(chunks), mode="r|") as tar:
            tar.extractall(p, **SAFE_EXTRACT)

    def get_file(self, _channel: object, path: str, dest: IO[bytes], *_: Any) -> int:
        p = self.real(path)
        if not p.exists():
            raise GuestNotFound("not_found")
        dest.write(b"x")
        return 0o644


@pytest.fixture
def guest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeGuest:
    g = FakeGuest(tmp_path / "guest", monkeypatch)
    (g.root / "etc").mkdir()
    (g.root / "etc" / "conf").write_bytes(b"conf")
    (g.root / "tree" / "sub").mkdir(parents=True)
    (g.root / "tree" / "sub" / "f").write_bytes(b"f")
    return g


def out(src: str, dest: Path | str) -> CopyReport:
    return transfer.copy_out(None, "b", src, str(dest))  # type: ignore[arg-type]


def into(src: Path | str, dest: str) -> CopyReport:
    return transfer.copy_in(None, "b", str(src), dest)  # type: ignore[arg-type]


def test_out_into_an_existing_directory(guest: FakeGuest, tmp_path: Path) -> None:
    out("/etc/conf", tmp_path)
    out("tree", tmp_path)  # relative: from /
    assert (tmp_path / "conf").read_bytes() == b"conf"
    assert (tmp_path / "tree" / "sub" / "f").read_bytes() == b"f"


def test_out_as_a_new_name_and_over_a_file(guest: FakeGuest, tmp_path: Path) -> None:
    out("/tree", tmp_path / "renamed")
    assert (tmp_path / "renamed" / "sub" / "f").exists()
    (tmp_path / "existing").write_bytes(b"old")
    out("/etc/conf", tmp_path / "existing")
    assert (tmp_path / "existing").read_bytes() == b"conf"


def test_out_contents_with_slash_dot(guest: FakeGuest, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    out("/tree/.", tmp_path / "d")
    assert (tmp_path / "d" / "sub" / "f").exists()
    out("/tree/.", tmp_path / "new")
    assert (tmp_path / "new" / "sub" / "f").exists()


def test_out_errors(guest: FakeGuest, tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"mine")
    with pytest.raises(UsageError) as err:
        out("/tree", tmp_path / "file")
    assert "onto the file" in one_sentence(err.value)
    assert (tmp_path / "file").read_bytes() == b"mine"
    with pytest.raises(MicroboxError) as err2:
        out("/etc/conf", str(tmp_path / "missing") + "/")
    one_sentence(err2.value)
    with pytest.raises(MicroboxError) as err3:
        out("/nope", tmp_path)
    assert "does not exist in box 'b'" in one_sentence(err3.value)
    with pytest.raises(MicroboxError):
        out("/etc/conf", tmp_path / "no" / "such" / "dir")


def test_in_rules(guest: FakeGuest, tmp_path: Path) -> None:
    src = make_tree(tmp_path)
    os.unlink(src / "fifo")
    into(src, "/etc")  # an existing directory: into it
    assert (guest.root / "etc" / "src" / "sub" / "f").exists()
    into(src, "/copy")  # missing: as that name
    assert (guest.root / "copy" / "exe").exists()
    into(str(src) + "/.", "/etc")  # contents
    assert (guest.root / "etc" / "exe").exists()
    into(src / "secret", "/etc/conf")  # a file over a file
    assert (guest.root / "etc" / "conf").read_bytes() == b"s"
    with pytest.raises(UsageError) as err:
        into(src, "/etc/conf")  # a directory onto a file
    one_sentence(err.value)
    with pytest.raises(MicroboxError) as err2:
        into(src / "secret", "/missing/")
    assert "mkdir -p /missing" in one_sentence(err2.value)
    with pytest.raises(MicroboxError):
        into(src / "secret", "/no/such/name")


# -- the CLI -------------------------------------------------------------------------------


class FakeBox:
    name = "b"

    def copy_out(self, src: str, dest: str) -> CopyReport:
        return transfer.copy_out(None, self.name, src, dest)  # type: ignore[arg-type]

    def close(self) -> None:
        pass


def test_cli_error_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = make_tar(d("x"), sym("x/l", str(tmp_path)), member("x/l/pwned", data=b"x"))
    monkeypatch.setattr(transport, "tar_get", lambda _c, _p: chunked(hostile))
    monkeypatch.setattr("microbox.sdk.boxes.Boxes.get", lambda _boxes, _ref: FakeBox())
    monkeypatch.setenv("MICROBOX_HOME", str(tmp_path / "home"))
    (tmp_path / "dest").mkdir()
    result = CliRunner().invoke(cli, ["cp", "b:/x", str(tmp_path / "dest")])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("microbox: ")
    assert lines[0].endswith(".") and ". " not in lines[0], lines[0]
    assert "without following it" in lines[0]
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("args", [["a", "b"], ["b:/x", "c:/y"], ["-", "-"], ["b:", "."]])
def test_cli_needs_one_box_side(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["cp", *args])
    assert result.exit_code == 2


def test_a_host_refusal_is_one_sentence(scratch: Scratch) -> None:
    with pytest.raises(HostError) as err:  # a symlink target over PATH_MAX: ENAMETOOLONG
        scratch.extract(make_tar(d("top"), sym("top/l", "t" * 5000)))
    assert "cannot write" in one_sentence(err.value)




# -- the HTTP routes -------------------------------------------------------------------


class ApiBox:
    """What the archive routes call on a box, over a scratch "guest"."""

    def __init__(self, tar: bytes) -> None:
        self.tar = tar
        self.received = b""

    def copy_in_tar(self, tar: IO[bytes], dest: str) -> CopyReport:
        self.received = tar.read()
        return CopyReport(bytes=len(self.received))

    def copy_out_tar(self, src: str, sink: IO[bytes]) -> CopyReport:
        for chunk in chunked(self.tar, 4096):
            sink.write(chunk)
        return CopyReport(bytes=len(self.tar))

    def export(self, sink: IO[bytes]) -> CopyReport:
        return self.copy_out_tar("/", sink)


def test_archive_routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from microbox.api import create_app
    from microbox.sdk import Runtime
    from microbox.sdk.aio import AsyncRuntime
    from microbox.sdk.boxes import Boxes

    tar = make_tar(d("top"), member("top/f", data=b"x" * 10_000))
    box = ApiBox(tar)
    monkeypatch.setattr(Boxes, "shared", lambda _boxes, _ref: box)
    monkeypatch.setenv("MICROBOX_HOME", str(tmp_path))
    app = create_app(AsyncRuntime(Runtime()), None, upload_limit=8192)
    with TestClient(app) as client:
        got = client.get("/boxes/b/archive", params={"path": "/top"})
        assert got.status_code == 413 and got.json()["error"]["type"] == "too_large"
        box.tar = tar[:4096]
        got = client.get("/boxes/b/archive", params={"path": "/top"})
        assert got.status_code == 200 and got.content == tar[:4096]
        assert got.headers["content-type"] == "application/x-tar"
        put = client.put("/boxes/b/archive", params={"path": "/srv"}, content=tar[:5000])
        assert put.status_code == 200, put.text
        assert put.json()["data"]["bytes"] == 5000 and box.received == tar[:5000]
        over = client.put("/boxes/b/archive", params={"path": "/srv"}, content=tar)
        assert over.status_code == 413
        got = client.get("/boxes/b/export")  # the root's tar, under the same limit
        assert got.status_code == 200 and got.content == tar[:4096]
        assert got.headers["content-type"] == "application/x-tar"
        box.tar = tar
        assert client.get("/boxes/b/export").status_code == 413
