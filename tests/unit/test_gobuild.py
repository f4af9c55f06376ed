"""The key of a Go program's build: it follows every edit of its sources and
nothing else."""

from __future__ import annotations

import os
from pathlib import Path

from microbox.artifacts import gobuild


def test_a_go_key_follows_every_edit(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module x\n")
    main = tmp_path / "main.go"
    main.write_text("package main\n")
    (tmp_path / "notes.txt").write_text("not a source")
    first = gobuild.cache_key(tmp_path)
    assert gobuild.cache_key(tmp_path) == first
    (tmp_path / "notes.txt").write_text("still not a source")
    assert gobuild.cache_key(tmp_path) == first
    main.write_text("package main // edited\n")
    edited = gobuild.cache_key(tmp_path)
    assert edited != first
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more.go").write_text("package sub\n")
    assert gobuild.cache_key(tmp_path) not in (first, edited)
    (tmp_path / "sub" / "more.go").unlink()
    os.utime(main, ns=(1, 1))  # the same content under another mtime: the same key
    assert gobuild.cache_key(tmp_path) == edited
