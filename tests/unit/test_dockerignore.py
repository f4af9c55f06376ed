""".dockerignore as Docker's patternmatcher reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from microbox.build.ignore import Ignore, clean, has_magic
from microbox.errors import UsageError


def excluded(text: str, *paths: str) -> list[str]:
    ignore = Ignore.parse(text)
    return [p for p in paths if ignore.excluded(p)]


def test_comments_blanks_and_leading_slash() -> None:
    text = "# a comment\n\n   \n/build/\n  docs  \n"
    assert excluded(text, "build", "build/x/y", "docs/a.md", "src/build", "README") == [
        "build", "build/x/y", "docs/a.md"]
    # only a line *starting* with # is a comment
    assert excluded("  # not a comment\n", "# not a comment") == ["# not a comment"]


def test_a_pattern_matching_a_directory_excludes_its_contents() -> None:
    assert excluded("node_modules\n", "node_modules", "node_modules/a/b.js",
                    "src/node_modules") == ["node_modules", "node_modules/a/b.js"]


def test_star_stays_in_one_component() -> None:
    assert excluded("*.log\n", "a.log", "logs/a.log", ".hidden.log") == ["a.log",
                                                                        ".hidden.log"]
    assert excluded("*/*.log\n", "a.log", "logs/a.log", "a/b/c.log") == ["logs/a.log"]


def test_double_star_spans_directories() -> None:
    assert excluded("**/*.pyc\n", "a.pyc", "x/y/a.pyc", "a.py") == ["a.pyc", "x/y/a.pyc"]
    assert excluded("a/**/z\n", "a/z", "a/b/c/z", "b/z") == ["a/z", "a/b/c/z"]
    assert excluded("foo/**\n", "foo", "foo/x") == ["foo/x"]
    assert excluded("**\n!keep\n", "x", "y/z", "keep") == ["x", "y/z"]


def test_question_mark_classes_and_escapes() -> None:
    assert excluded("file?.txt\n", "file1.txt", "file12.txt", "file/.txt") == ["file1.txt"]
    assert excluded("[a-c]*\n", "apple", "cat", "dog") == ["apple", "cat"]
    assert excluded("[^a]*\n", "apple", "cat") == ["cat"]
    assert excluded("star\\*\n", "star*", "starx") == ["star*"]
    assert excluded("a.b\n", "a.b", "axb") == ["a.b"]  # `.` is no regex wildcard here


def test_exceptions_and_last_match_wins() -> None:
    text = "*.md\n!README.md\nREADME.md\n!docs\n"
    assert excluded(text, "a.md", "README.md", "docs") == ["a.md", "README.md"]
    text = "docs\n!docs/keep.md\n"
    assert excluded(text, "docs", "docs/a.md", "docs/keep.md") == ["docs", "docs/a.md"]


def test_patterns_are_cleaned_like_paths() -> None:
    assert clean("a/./b/") == "a/b" and clean("a/../b") == "b" and clean("") == "."
    assert excluded("./src/../tmp//\n", "tmp/x", "src") == ["tmp/x"]
    assert not Ignore.parse("*\n").excluded(".")  # the context itself never is


def test_walks_skip_what_no_exception_can_bring_back() -> None:
    ignore = Ignore.parse("node_modules\nbuild\n!node_modules/keep\n!**/*.keep\n")
    assert ignore.may_include_under("node_modules")
    assert ignore.may_include_under("build")  # `**/*.keep` may match anywhere
    assert not Ignore.parse("build\n!src/x\n").may_include_under("build")


@pytest.mark.parametrize(("text", "line"), [("ok\n!\n", 2), ("a\n\n[z-a\n", 3)])
def test_bad_patterns_name_the_line(text: str, line: int) -> None:
    with pytest.raises(UsageError, match=f"^.dockerignore:{line}: "):
        Ignore.parse(text)


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("a\n")
    assert Ignore.load(tmp_path).excluded("a")
    (tmp_path / "web.Dockerfile.dockerignore").write_text("b\n")
    ignore = Ignore.load(tmp_path, tmp_path / "web.Dockerfile")
    assert ignore.excluded("b") and not ignore.excluded("a")
    assert not Ignore.load(tmp_path / "missing")


def test_wildcard_detection() -> None:
    assert has_magic("*.txt") and has_magic("a?") and has_magic("[ab]")
    assert not has_magic("plain/path") and not has_magic("a\\*b")
