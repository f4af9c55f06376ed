"""`-v` parsing and checks (microbox.mounts): Docker's syntax, refusals with
the fix, nothing made on the host."""

from __future__ import annotations

from pathlib import Path

import pytest

from microbox.errors import InvalidSpec
from microbox.mounts import Mount, check, parse
from microbox.spec import BoxSpec


def test_docker_syntax(tmp_path: Path) -> None:
    assert parse(f"{tmp_path}:/data") == Mount(str(tmp_path), "/data")
    assert parse(f"{tmp_path}:/data:ro") == Mount(str(tmp_path), "/data", read_only=True)
    assert parse(f"{tmp_path}:/data:ro,cached") == Mount(str(tmp_path), "/data", True, True)
    assert parse(f"{tmp_path}:/d:delegated").cached and not parse(f"{tmp_path}:/d:rw").cached
    assert parse("cache:/cache").kind == "volume" and parse("/x:/y").kind == "bind"
    m = Mount(str(tmp_path), "/data", True, True)
    assert Mount.from_json(m.to_json()) == m and str(m) == f"{tmp_path}:/data:ro,cached"
    spec = BoxSpec(image="busybox", mounts=(parse(f"{tmp_path}:/data"), parse("vol:/v:ro")))
    assert BoxSpec.from_json(spec.to_json()) == spec
    assert "mounts" not in BoxSpec(image="busybox").to_json()  # pool ids stay as they were


@pytest.mark.parametrize("text, words", [
    ("rel/dir:/data", "absolute path"), ("./x:/data", r"\$PWD/x"),
    ("~/x:/data", "absolute path"), ("/nonexistent-dir:/data", "does not exist"),
    ("/etc/passwd:/data", "is not a directory"), ("/tmp:data", "must be absolute"),
    ("/tmp:/", "the box's own"), ("/tmp:/proc/x", "the box's own"),
    ("/tmp:/run", "the box's own"), ("bad name!:/x", "bad volume name"),
    ("vol:/x:cached", "cached is for host folders"),
])
def test_refusals_name_the_fix(text: str, words: str) -> None:
    with pytest.raises(InvalidSpec, match=words):
        check((parse(text),))


def test_bad_syntax_and_repeats() -> None:
    for bad in ("a:b:c:d", "/tmp:/x:rx", ":/x", "/tmp:"):
        with pytest.raises(InvalidSpec, match="-v"):
            check((parse(bad),))
    with pytest.raises(InvalidSpec, match="twice"):
        check((parse("/tmp:/x"), parse("/var:/x/")))
    with pytest.raises(InvalidSpec, match="at most"):
        check(tuple(parse(f"v{i}:/m{i}") for i in range(9)))
