"""`.dockerignore`, as Docker's patternmatcher reads it.

One pattern a line; a line starting with `#` is a comment; surrounding blanks
are dropped; a pattern is cleaned like a path (`a/./b/` is `a/b`) and a leading
`/` is dropped (patterns are relative to the context). Go's filepath.Match
syntax: `*` and `?` within one path component, `[a-z]` and `[^a]` classes, `\\`
escapes; `**` is any number of components (none too). A pattern that matches a
directory excludes all below it. `!pattern` brings back what an earlier pattern
excluded; the last pattern that matches decides.

The Dockerfile and .dockerignore are read by the build whatever this says;
listed here, they are only left out of COPY and ADD, as in Docker.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from microbox.errors import UsageError

MAGIC = "*?[\\"


@dataclass(frozen=True)
class Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]
    line: int


def clean(path: str) -> str:
    """Go's filepath.Clean: no `.`, no `..` it can drop, no double or trailing
    slashes; "" is "."."""
    cleaned = posixpath.normpath(path) if path else "."
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def translate(pattern: str, *, doublestar: bool = True) -> str:
    """A regular expression for a pattern in Go's filepath.Match syntax, with
    `**` for any number of path components (patternmatcher's extension, which
    COPY sources do not have: `doublestar=False`)."""
    out, i, n = "^", 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*" and pattern[i:i + 1] == "*" and doublestar:
            i += 1
            if pattern[i:i + 1] == "/":
                i += 1
            out += ".*" if i == n else "(?:.*/)?"
        elif ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\":
            out += re.escape(pattern[i]) if i < n else "\\\\"
            i += 1
        elif ch == "[":
            end = _class_end(pattern, i)
            if end < 0:
                raise ValueError(f"unclosed [ in {pattern!r}")
            body = pattern[i:end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            if not body:
                raise ValueError(f"empty character class in {pattern!r}")
            body = re.sub(r"\\(.)", r"\\\1", body.replace("/", "")).replace("[", "\\[")
            out += f"[^{body}/]" if negate else f"[{body}]"
            i = end + 1
        else:
            out += re.escape(ch)
    return out + "$"


def _class_end(pattern: str, start: int) -> int:
    """The index of the `]` closing a class that starts at `start`, or -1."""
    i = start + (1 if pattern[start:start + 1] == "^" else 0)
    first = True
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            first = False
            continue
        if pattern[i] == "]" and not first:
            return i
        first = False
        i += 1
    return -1


def has_magic(pattern: str) -> bool:
    """Whether a COPY source is a wildcard (Docker: `*`, `?` or `[` unescaped)."""
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern[i] in "*?[":
            return True
        i += 1
    return False


class Ignore:
    """The patterns of a .dockerignore; `excluded(path)` for paths relative to
    the context, with "/" separators."""

    def __init__(self, patterns: Sequence[str], *, path: str = ".dockerignore",
                 lines: Sequence[int] | None = None) -> None:
        self.patterns: list[Pattern] = []
        for text, line in zip(patterns, lines or range(1, len(patterns) + 1), strict=True):
            text = text.strip()
            if not text:
                continue
            exclusion = text.startswith("!")
            body = clean(text[1:].strip()) if exclusion else clean(text)
            if body == "." and exclusion and not text[1:].strip():
                raise UsageError(f"{path}:{line}: a '!' needs a pattern after it")
            try:
                regex = re.compile(translate(body), re.S)
            except (ValueError, re.error) as e:
                raise UsageError(f"{path}:{line}: bad pattern {text!r} ({e})") from None
            self.patterns.append(Pattern(body, exclusion, regex, line))
        self.exclusions = [p for p in self.patterns if p.exclusion]

    @classmethod
    def parse(cls, text: str, path: str = ".dockerignore") -> Ignore:
        patterns, lines = [], []
        for n, line in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
            if line.startswith("#") or not line.strip():
                continue
            line = line.strip()
            invert = line.startswith("!")
            body = line[1:].strip() if invert else line
            if body:
                body = clean(body)
                body = body[1:] if len(body) > 1 and body.startswith("/") else body
            patterns.append(("!" if invert else "") + body)
            lines.append(n)
        return cls(patterns, path=path, lines=lines)

    @classmethod
    def load(cls, context: Path, dockerfile: Path | None = None) -> Ignore:
        """The ignore file Docker would use: `<Dockerfile>.dockerignore` next to
        the Dockerfile if there is one, else the context's `.dockerignore`."""
        candidates = [context / ".dockerignore"]
        if dockerfile is not None:
            candidates.insert(0, dockerfile.with_name(dockerfile.name + ".dockerignore"))
        for candidate in candidates:
            if candidate.is_file():
                return cls.parse(candidate.read_text(errors="surrogateescape"),
                                 str(candidate))
        return cls([])

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, path: str) -> bool:
        """Whether `path` is left out of the context: the last pattern that
        matches it or one of its parent directories decides."""
        path = clean(path)
        if path == "." or not self.patterns:
            return False
        parts = path.split("/")
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            if pattern.regex.match(path) or any(pattern.regex.match(p) for p in parents):
                matched = not pattern.exclusion
        return matched

    def may_include_under(self, directory: str) -> bool:
        """Whether some `!pattern` may bring back a path below an excluded
        directory (if not, a walk skips it whole)."""
        parts = clean(directory).split("/")
        for pattern in self.exclusions:
            literal = []
            for part in pattern.text.split("/"):
                if any(ch in part for ch in MAGIC):
                    break
                literal.append(part)
            common = min(len(literal), len(parts))
            if literal[:common] == parts[:common]:
                return True
        return False
