"""A Dockerfile's text into instructions, with BuildKit's line rules.

- Parser directives (`# escape=` and `# syntax=`, also `# check=`) are read
  only at the very top; the first other line ends them. The escape character
  (`\\` or a backtick) continues a line when it is the last non-blank character.
- A line whose first non-blank character is `#` is a comment, also in the
  middle of a continued instruction; a blank line inside one is skipped (Docker
  warns about it).
- Here-documents: RUN, COPY and ADD in shell form may name `<<WORD`, `<<-WORD`
  (leading tabs stripped), `<<"WORD"` or `<<'WORD'` (no expansion of the body);
  each body follows the instruction's last line, up to a line that is exactly
  WORD.
- `--name=value` words right after the keyword are the instruction's flags.

Line numbers count from 1, like Docker's messages. Nothing here knows what an
instruction means: see dockerfile.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from microbox.errors import UsageError

KEYWORDS = ("ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM",
            "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL",
            "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")
HEREDOC_KEYWORDS = ("RUN", "COPY", "ADD")
_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*\Z")
_DIRECTIVES = ("escape", "syntax", "check")
_HEREDOC = re.compile(r"(\d*)<<(-?)\s*([^<]*)\Z")
_SPACE = re.compile(r"[\t\v\f\r ]+")


@dataclass(frozen=True)
class Heredoc:
    """A here-document: `content` is the body as written for RUN (the shell
    reads it), and expanded (unless `expand` is off) with its leading tabs
    stripped (if `chomp`) for COPY/ADD, where it becomes a file named `name`."""

    name: str
    content: str
    expand: bool = True
    chomp: bool = False


@dataclass(frozen=True)
class RawInstruction:
    """One instruction before it is given a meaning: `original` is its text with
    continuation lines joined (heredoc bodies not included), `rest` what follows
    the keyword and the flags."""

    line: int
    end_line: int
    keyword: str
    original: str
    flags: list[str]
    rest: str
    heredocs: list[Heredoc]


@dataclass(frozen=True)
class Source:
    escape: str
    instructions: list[RawInstruction]
    warnings: list[str]


def fail(path: str, line: int, sentence: str) -> UsageError:
    """The one error of this package: FILE:LINE and what is wrong there."""
    return UsageError(f"{path}:{line}: {sentence}")


def split_lines(text: str) -> list[str]:
    """Lines with their "\\n" kept (heredoc bodies are copied byte for byte)."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def parse_json(rest: str) -> list[str] | None:
    """The JSON-array form (`["a", "b"]`), or None for the shell form (anything
    that does not parse as a JSON array is a shell command, as in Docker)."""
    text = rest.lstrip()
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise ValueError("when using JSON array syntax, arrays must be comprised of "
                         "strings only")
    return value


class _Directives:
    def __init__(self) -> None:
        self.escape = "\\"
        self.done = False
        self.seen: set[str] = set()
        self.continuation = self._regex()

    def _regex(self) -> re.Pattern[str]:
        e = re.escape(self.escape)
        return re.compile(rf"([^{e}]){e}[ \t]*\Z|^{e}[ \t]*\Z")

    def feed(self, token: str) -> str | None:
        """Read a possible directive; an error message if it is a bad one."""
        if self.done:
            return None
        match = _DIRECTIVE.match(token[1:].lstrip()) if token.startswith("#") else None
        key = match.group(1).lower() if match else ""
        if not match or key not in _DIRECTIVES:
            self.done = True
            return None
        if key in self.seen:
            return f"only one {key} parser directive can be used"
        self.seen.add(key)
        if key == "escape":
            if match.group(2) not in ("\\", "`"):
                return f"invalid escape token '{match.group(2)}' does not match ` or \\"
            self.escape = match.group(2)
            self.continuation = self._regex()
        return None

    def trim(self, token: str) -> tuple[str, bool]:
        """The token without its continuation character, and whether the
        instruction ends on this line."""
        trimmed, n = self.continuation.subn(r"\1", token)
        return trimmed, n == 0


def scan(text: str, path: str = "Dockerfile") -> Source:
    """Split the text into raw instructions; raises UsageError naming the line."""
    lines = split_lines(text.removeprefix("\ufeff"))
    d = _Directives()
    out: list[RawInstruction] = []
    warnings: list[str] = []
    i = 0
    while i < len(lines):
        token = lines[i].rstrip("\r\n").lstrip()
        i += 1
        start = i
        if (problem := d.feed(token)) is not None:
            raise fail(path, start, problem)
        token, end = d.trim("" if is_comment(token) else token)
        if end and not token:
            continue
        joined = token
        empty = False
        while not end and i < len(lines):
            raw = lines[i].rstrip("\r\n")
            i += 1
            if is_comment(raw):
                continue
            if not raw.strip():
                empty = True
                continue
            raw, end = d.trim(raw)
            joined += raw
        if empty:
            warnings.append(f"{path}:{start}: empty continuation line in an instruction "
                            "(Docker will reject these in a future release)")
        instruction, i = _instruction(joined, d.escape, lines, i, path, start)
        out.append(instruction)
    if not out:
        raise UsageError(f"{path}: the file has no instructions")
    return Source(d.escape, out, warnings)


def _instruction(line: str, escape: str, lines: list[str], i: int, path: str,
                 start: int) -> tuple[RawInstruction, int]:
    """The instruction on `line` and, where it has heredocs, their bodies read
    from lines[i:]; returns it and the index of the next line."""
    parts = _SPACE.split(line.strip(), maxsplit=1)
    keyword = parts[0].upper()
    if keyword not in KEYWORDS:
        raise fail(path, start, f"unknown instruction {parts[0]}")
    rest, flags = _flags(parts[1] if len(parts) > 1 else "", escape)
    docs: list[Heredoc] = []
    if keyword in HEREDOC_KEYWORDS and "<<" in line and not _is_json(rest, path, start):
        for name, chomp, expand in heredoc_words(line):
            body: list[str] = []
            while True:
                if i >= len(lines):
                    raise fail(path, start, f"unterminated heredoc {name} (no line {name} "
                               "after it)")
                text = lines[i]
                i += 1
                end = text.rstrip("\r\n")
                if (end.lstrip("\t") if chomp else end) == name:
                    break
                body.append(text)
            docs.append(Heredoc(name, "".join(body), expand, chomp))
    return RawInstruction(start, i, keyword, line.strip(), flags, rest, docs), i


def _is_json(rest: str, path: str, line: int) -> bool:
    try:
        return parse_json(rest) is not None
    except ValueError as e:
        raise fail(path, line, str(e)) from None


def _flags(text: str, escape: str) -> tuple[str, list[str]]:
    """Leading `--name[=value]` words (quotes and escapes removed) and the rest;
    a bare `--` ends them."""
    flags: list[str] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if not text.startswith("--", pos):
            return text[pos:].strip(), flags
        word, quoted, quote = "", False, ""
        while pos < len(text) and (quote or not text[pos].isspace()):
            ch = text[pos]
            pos += 1
            if quote and ch == quote:
                quote = ""
            elif not quote and ch in "'\"":
                quote, quoted = ch, True
            elif ch == escape:
                if pos < len(text):
                    word += text[pos]
                    pos += 1
            else:
                word += ch
        if word == "--":
            return text[pos:].strip(), flags
        if word or quoted:
            flags.append(word)


def heredoc_words(line: str) -> list[tuple[str, bool, bool]]:
    """The heredocs a line names: (word, chomp, expand) for each `<<WORD`."""
    found = []
    for word in _shell_words(line):
        match = _HEREDOC.match(word)
        if not match or not match.group(3):
            continue
        raw = match.group(3)
        name = _unquote(raw)
        if not name or _SPACE.search(name):
            continue
        quoted = _count_quotes(raw) != _count_quotes(name)
        found.append((name, match.group(2) == "-", not quoted))
    return found


def single_heredoc(text: str) -> str | None:
    """The heredoc name when `text` is one heredoc word and nothing else
    (`<<EOF`, `<<-"EOF"`), as BuildKit tells a RUN or a COPY source that is
    only a heredoc."""
    match = _HEREDOC.match(text.strip())
    name = _unquote(match.group(3)) if match else None
    return name if name and not _SPACE.search(name) else None


def _count_quotes(text: str) -> int:
    return text.count("'") + text.count('"')


def _shell_words(line: str) -> list[str]:
    """Words as a shell splits them, quotes and backslashes kept, and `<<` kept
    together with the word after it (`<< EOF` is one heredoc)."""
    words: list[str] = []
    word, quote, i = "", "", 0
    while i < len(line):
        ch = line[i]
        i += 1
        if quote:
            word += ch
            if ch == "\\" and quote == '"' and i < len(line):
                word += line[i]
                i += 1
            elif ch == quote:
                quote = ""
        elif ch.isspace():
            if word.endswith("<<"):
                continue
            if word:
                words.append(word)
            word = ""
        elif ch == "\\":
            word += line[i - 1:i + 1]
            i += 1
        else:
            word += ch
            if ch in "'\"":
                quote = ch
    if word:
        words.append(word)
    return words


def _unquote(text: str) -> str | None:
    """A heredoc word without its quotes and escapes (None if a quote is not
    closed)."""
    out, quote, i = "", "", 0
    while i < len(text):
        ch = text[i]
        i += 1
        if ch == "\\" and quote != "'" and i < len(text) and (
                not quote or text[i] in '"$\\'):
            ch = text[i]
            i += 1
        elif ch == quote:
            quote = ""
            continue
        elif not quote and ch in "'\"":
            quote = ch
            continue
        out += ch
    return None if quote else out


def words(rest: str, escape: str) -> list[str]:
    """Whitespace-separated words, quotes and escapes kept for the expansion to
    remove (Docker's reading of ENV, LABEL and ARG)."""
    out: list[str] = []
    word, quote, blank_ok, i = "", "", False, 0
    while i < len(rest):
        ch = rest[i]
        i += 1
        if not quote and ch.isspace():
            if blank_ok or word:
                out.append(word)
            word, blank_ok = "", False
            continue
        if ch == escape and (not quote or quote == '"'):
            if i == len(rest):
                continue  # an escape at the end is dropped
            word += ch + rest[i]
            i += 1
            continue
        if quote and ch == quote:
            quote = ""
        elif not quote and ch in "'\"":
            quote, blank_ok = ch, True
        word += ch
    if blank_ok or word:
        out.append(word)
    return out


def split_spaces(rest: str) -> list[str]:
    """Docker's plain whitespace split (FROM, EXPOSE, and COPY/ADD/VOLUME in
    shell form): quotes are not special here."""
    return [w for w in _SPACE.split(rest.strip()) if w] if rest.strip() else []
