"""Variable expansion in Dockerfile words, against what BuildKit's lexer gives."""

from __future__ import annotations

import pytest

from microbox.build.expand import ExpandError, expand, expand_words

ENV = {"A": "1", "EMPTY": "", "PATHY": "/usr/local/bin/tool.tar.gz", "SP": "a b"}


@pytest.mark.parametrize(("word", "want"), [
    ("$A", "1"),
    ("${A}", "1"),
    ("x${A}y", "x1y"),
    ("$A$A", "11"),
    ("$UNSET", ""),
    ("${UNSET}", ""),
    ("$", "$"),
    ("a$/b", "a$/b"),
    ("${A:-d}", "1"),
    ("${UNSET:-d}", "d"),
    ("${EMPTY:-d}", "d"),
    ("${EMPTY-d}", ""),
    ("${UNSET-d}", "d"),
    ("${A:+w}", "w"),
    ("${EMPTY:+w}", ""),
    ("${EMPTY+w}", "w"),
    ("${UNSET:+w}", ""),
    ("${UNSET:-${A}}", "1"),
    ("${UNSET:-a b}", "a b"),
    (r"\$A", "$A"),
    (r"\${A}", "${A}"),
    ("'$A'", "$A"),
    ('"$A"', "1"),
    ('"q $A"', "q 1"),
    (r'"a\"b"', 'a"b'),
    (r'"a\$A"', "a$A"),
    (r'"a\b"', r"a\b"),
    (r"a\ b", "a b"),
    ("'a\"b'", 'a"b'),
    ("${PATHY#*/}", "usr/local/bin/tool.tar.gz"),
    ("${PATHY##*/}", "tool.tar.gz"),
    ("${PATHY%.*}", "/usr/local/bin/tool.tar"),
    ("${PATHY%%.*}", "/usr/local/bin/tool"),
    ("${PATHY/local/opt}", "/usr/opt/bin/tool.tar.gz"),
    ("${SP// /_}", "a_b"),
    ("${UNSET#x}", ""),
])
def test_expand(word: str, want: str) -> None:
    assert expand(word, ENV) == want


def test_backtick_escape() -> None:
    assert expand("`$A", ENV, escape="`") == "$A"
    assert expand(r"C:\dir\$A", ENV, escape="`") == r"C:\dir\1"
    assert expand('"a`"b"', ENV, escape="`") == 'a"b'


def test_quotes_kept_for_heredoc_bodies() -> None:
    assert expand("echo \"$A\" '$A'\n", ENV, quotes=False) == "echo \"1\" '1'\n"
    assert expand(r"cost: \$5", ENV, quotes=False) == "cost: $5"


@pytest.mark.parametrize(("word", "message"), [
    ('"open', "double-quote"),
    ("'open", "single-quote"),
    ("${A", "missing '}'"),
    ("${}", "bad substitution"),
    ("${A:=x}", "unsupported modifier"),
    ("${UNSET:?must be set}", "UNSET: must be set"),
    ("${UNSET?}", "UNSET: is not allowed to be unset"),
    ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
])
def test_errors(word: str, message: str) -> None:
    with pytest.raises(ExpandError, match=message):
        expand(word, ENV)


def test_words_split_on_expanded_spaces_only() -> None:
    assert expand_words("$SP", ENV) == ["a", "b"]
    assert expand_words('"$SP"', ENV) == ["a b"]
    assert expand_words(r"x\ y", ENV) == ["x y"]
    assert expand_words("${A}/tcp", ENV) == ["1/tcp"]
