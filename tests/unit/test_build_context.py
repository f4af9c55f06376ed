"""The build context: COPY sources matched with Docker's rules, never read
outside the context, hashed without mtimes, and written as a tar stream."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from microbox.build.context import Context
from microbox.build.ignore import Ignore
from microbox.errors import UsageError


def tree(root: Path) -> Path:
    """app/: a.txt b.txt (0600) run.sh (0755) src/{main.py, pkg/mod.py, link -> main.py}
    and a secret next to it, outside the context."""
    (root / "secret").write_text("outside\n")
    ctx = root / "app"
    (ctx / "src" / "pkg").mkdir(parents=True)
    (ctx / "a.txt").write_text("a\n")
    (ctx / "b.txt").write_text("b\n")
    (ctx / "b.txt").chmod(0o600)
    (ctx / "run.sh").write_text("#!/bin/sh\n")
    (ctx / "run.sh").chmod(0o755)
    (ctx / "src" / "main.py").write_text("print(1)\n")
    (ctx / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (ctx / "src" / "link").symlink_to("main.py")
    return ctx


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def tar_of(ctx: Context, sources: list[str], dest: str, **kw: object) -> bytes:
    out = io.BytesIO()
    ctx.write_tar(sources, dest, out, **kw)  # type: ignore[arg-type]
    return out.getvalue()


def test_matching(tmp_path: Path) -> None:
    ctx = Context(tree(tmp_path))
    assert [(m.path, m.kind) for m in ctx.match(["*.txt", "src/", "/run.sh", "."])] == [
        ("a.txt", "file"), ("b.txt", "file"), ("src", "dir"), ("run.sh", "file"), (".", "dir")]
    assert ctx.files(["src"]) == ["src/link", "src/main.py", "src/pkg/mod.py"]
    assert [m.path for m in ctx.match(["src/*/*.py", "[ab].txt"])] == [
        "src/pkg/mod.py", "a.txt", "b.txt"]


def test_an_empty_match_is_an_error(tmp_path: Path) -> None:
    ctx = Context(tree(tmp_path))
    with pytest.raises(UsageError, match=r"^Dockerfile:4: COPY: 'nope\*' matches nothing"):
        ctx.match(["a.txt", "nope*"], line=4)
    named = Context(ctx.root, dockerfile="web.Dockerfile")
    with pytest.raises(UsageError, match=r"^web.Dockerfile:9: ADD: 'nope' matches nothing"):
        named.hash_sources(["nope"], line=9, keyword="ADD")
    with pytest.raises(UsageError, match="no source files were specified"):
        ctx.match([])


def test_dotdot_cannot_leave_the_context(tmp_path: Path) -> None:
    ctx = Context(tree(tmp_path))
    for source in ("../secret", "src/../../secret", "a/../../app/a.txt"):
        with pytest.raises(UsageError, match="outside the build context"):
            ctx.match([source])
    assert [m.path for m in ctx.match(["src/../a.txt", "/../a.txt"])] == ["a.txt", "a.txt"]


@pytest.mark.parametrize("target", ["../secret", "{outside}/secret", "../../etc/passwd"])
def test_symlinks_cannot_lead_out(tmp_path: Path, target: str) -> None:
    ctx_dir = tree(tmp_path)
    (ctx_dir / "out").symlink_to(target.format(outside=tmp_path))
    ctx = Context(ctx_dir)
    for source in ("out", "o*"):
        with pytest.raises(UsageError, match=r"leads outside the build context \(symlink out "
                                             r"-> .*\)\.$"):
            ctx.match([source])
    # a symlink below a copied directory is copied as a symlink: nothing is read
    (ctx_dir / "src" / "out").symlink_to(target.format(outside=tmp_path))
    data = tar_of(ctx, ["src"], "/s/")
    assert members(data)["s/out"].issym() and b"outside" not in data


def test_a_symlinked_directory_on_the_way_cannot_lead_out(tmp_path: Path) -> None:
    ctx_dir = tree(tmp_path)
    (ctx_dir / "up").symlink_to("..")
    with pytest.raises(UsageError, match=r"\(symlink up -> \.\.\)\.$"):
        Context(ctx_dir).match(["up/secret"])


def test_symlinks_inside_are_followed_for_a_source(tmp_path: Path) -> None:
    ctx_dir = tree(tmp_path)
    (ctx_dir / "abs").symlink_to(ctx_dir / "src" / "main.py")
    (ctx_dir / "srcdir").symlink_to("src")
    ctx = Context(ctx_dir)
    assert [(m.path, m.name) for m in ctx.match(["src/link", "abs", "srcdir"])] == [
        ("src/main.py", "link"), ("src/main.py", "abs"), ("src", "srcdir")]
    assert set(members(tar_of(ctx, ["src/link"], "/d/"))) == {"d", "d/link"}


def test_the_contexts_dockerignore_is_read_by_default(tmp_path: Path) -> None:
    ctx_dir = tree(tmp_path)
    (ctx_dir / ".dockerignore").write_text("*.txt\n")
    assert Context(ctx_dir).files(["."]) == [".dockerignore", "run.sh", "src/link",
                                            "src/main.py", "src/pkg/mod.py"]
    assert Context(ctx_dir, Ignore([])).files(["*.txt"]) == ["a.txt", "b.txt"]


def test_dockerignore_applies_to_sources(tmp_path: Path) -> None:
    ctx_dir = tree(tmp_path)
    ignore = Ignore.parse("*.txt\n!b.txt\nsrc\n!src/pkg/mod.py\n")
    ctx = Context(ctx_dir, ignore)
    assert ctx.files(["."]) == ["b.txt", "run.sh", "src/pkg/mod.py"]
    with pytest.raises(UsageError, match=r"'a\.txt' matches nothing"):
        ctx.match(["a.txt"])
    assert [m.path for m in ctx.match(["*.txt"])] == ["b.txt"]
    assert [m.path for m in ctx.match(["src"])] == ["src"]  # for what `!` brings back
    # a directory that nothing brings back is not in the context at all
    with pytest.raises(UsageError, match="matches nothing"):
        Context(ctx_dir, Ignore.parse("src\n")).match(["src"])


def test_hash_covers_content_mode_and_links_but_not_mtime(tmp_path: Path) -> None:
    ctx_dir = tree(tmp_path)
    ctx = Context(ctx_dir)
    sources = ["src", "*.txt"]
    first = ctx.hash_sources(sources)
    assert first.startswith("sha256:") and first == ctx.hash_sources(sources)
    os.utime(ctx_dir / "a.txt", (1, 1))
    os.utime(ctx_dir / "src" / "pkg", (1, 1))
    assert ctx.hash_sources(sources) == first
    (ctx_dir / "a.txt").write_text("A\n")
    second = ctx.hash_sources(sources)
    assert second != first
    (ctx_dir / "a.txt").chmod(0o640)
    third = ctx.hash_sources(sources)
    assert third != second
    (ctx_dir / "src" / "link").unlink()
    (ctx_dir / "src" / "link").symlink_to("pkg")
    assert ctx.hash_sources(sources) != third
    assert ctx.hash_sources(["src"]) != ctx.hash_sources(["src/pkg"])


def test_tar_copies_a_directorys_contents(tmp_path: Path) -> None:
    ctx = Context(tree(tmp_path))
    m = members(tar_of(ctx, ["src"], "/opt/app", mtime=5))
    assert sorted(m) == ["opt", "opt/app", "opt/app/link", "opt/app/main.py", "opt/app/pkg",
                         "opt/app/pkg/mod.py"]
    assert m["opt"].isdir() and m["opt"].mode == 0o755 and m["opt"].mtime == 5
    assert m["opt/app/link"].issym() and m["opt/app/link"].linkname == "main.py"
    assert all((i.uid, i.gid) == (0, 0) for i in m.values())


def test_tar_file_destinations_modes_and_owner(tmp_path: Path) -> None:
    ctx = Context(tree(tmp_path))
    m = members(tar_of(ctx, ["b.txt", "run.sh"], "/bin/", chown=(1000, 100)))
    assert sorted(m) == ["bin", "bin/b.txt", "bin/run.sh"]
    assert (m["bin/b.txt"].mode, m["bin/run.sh"].mode) == (0o600, 0o755)
    assert {(i.uid, i.gid) for i in m.values()} == {(1000, 100)}
    one = members(tar_of(ctx, ["a.txt"], "/etc/app.conf", chmod=0o400))
    assert sorted(one) == ["etc", "etc/app.conf"] and one["etc/app.conf"].mode == 0o400
    with tarfile.open(fileobj=io.BytesIO(tar_of(ctx, ["a.txt"], "/x"))) as tar:
        assert tar.format == tarfile.PAX_FORMAT
        assert tar.extractfile("x").read() == b"a\n"  # type: ignore[union-attr]
    into_existing = members(tar_of(ctx, ["a.txt"], "/srv", dest_is_dir=True))
    assert "srv/a.txt" in into_existing


def test_several_sources_need_a_directory(tmp_path: Path) -> None:
    ctx = Context(tree(tmp_path))
    with pytest.raises(UsageError, match="must be a directory ending in /"):
        tar_of(ctx, ["a.txt", "b.txt"], "/x")
    with pytest.raises(UsageError, match="must be a directory ending in /"):
        tar_of(ctx, ["*.txt"], "/x")
    assert "x" in members(tar_of(ctx, ["a*.txt"], "/x"))  # one match: a file named x


def test_tar_inline_heredoc_files(tmp_path: Path) -> None:
    ctx = Context(tree(tmp_path))
    data = tar_of(ctx, [], "/etc/", inline=[("motd", "hi\n"), ("issue", "x")])
    m = members(data)
    assert sorted(m) == ["etc", "etc/issue", "etc/motd"] and m["etc/motd"].mode == 0o644
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.extractfile("etc/motd").read() == b"hi\n"  # type: ignore[union-attr]
    assert "conf" in members(tar_of(ctx, [], "/conf", inline=[("EOF", "")]))


def test_add_unpacks_archives(tmp_path: Path) -> None:
    ctx_dir = tree(tmp_path)
    with tarfile.open(ctx_dir / "rel.tgz", "w:gz") as tar:
        tar.add(ctx_dir / "src", "./pkg")
    ctx = Context(ctx_dir)
    m = members(tar_of(ctx, ["rel.tgz", "a.txt"], "/opt/", extract=True, chown=(1, 2)))
    assert sorted(m) == ["opt", "opt/a.txt", "opt/pkg", "opt/pkg/link", "opt/pkg/main.py",
                         "opt/pkg/pkg", "opt/pkg/pkg/mod.py"]
    assert m["opt/pkg/link"].issym() and (m["opt/pkg/main.py"].uid, m["opt/pkg/main.py"].gid) \
        == (1, 2)
    # one archive and a destination without "/": unpacked into it, as a directory
    assert "srv/pkg/main.py" in members(tar_of(ctx, ["rel.tgz"], "/srv", extract=True))
    assert "srv" in members(tar_of(ctx, ["rel.tgz"], "/srv"))  # COPY: the file itself


def test_add_refuses_an_archive_that_climbs_out(tmp_path: Path) -> None:
    ctx_dir = tree(tmp_path)
    with tarfile.open(ctx_dir / "evil.tar", "w") as tar:
        tar.add(ctx_dir / "a.txt", "../../etc/evil")
    with pytest.raises(UsageError, match=r"evil\.tar holds '\.\./\.\./etc/evil', which leads"):
        tar_of(Context(ctx_dir), ["evil.tar"], "/opt/", extract=True)


def test_archive_kind_for_add(tmp_path: Path) -> None:
    ctx_dir = tree(tmp_path)
    with tarfile.open(ctx_dir / "x.tar", "w") as tar:
        tar.add(ctx_dir / "a.txt", "a.txt")
    (ctx_dir / "x.tar.gz").write_bytes(gzip.compress((ctx_dir / "x.tar").read_bytes()))
    (ctx_dir / "fake.gz").write_bytes(gzip.compress(b"not a tar" * 100))
    ctx = Context(ctx_dir)
    assert ctx.archive_kind("x.tar") == "tar" and ctx.archive_kind("x.tar.gz") == "gzip"
    assert ctx.archive_kind("fake.gz") is None and ctx.archive_kind("a.txt") is None
