"""Variable expansion in Dockerfile words, as BuildKit's shell lexer does it.

A word is read like a POSIX shell word: `'...'` is literal, `"..."` expands
variables and lets the escape character escape `"`, `$` and itself, the escape
character outside quotes takes the next character literally, and the quotes
themselves are removed. Variables: `$NAME`, `${NAME}`, `${NAME:-word}`,
`${NAME-word}`, `${NAME:+word}`, `${NAME+word}`, `${NAME:?message}`,
`${NAME?message}`, `${NAME#pattern}`, `${NAME##pattern}`, `${NAME%pattern}`,
`${NAME%%pattern}`, `${NAME/pattern/replacement}` and `${NAME//pattern/...}`
(patterns take `*` and `?`). An unset name expands to the empty string; `$`
before something that is no name stays a `$`.

Docker expands these words in FROM, ENV, ARG, LABEL, WORKDIR, USER, COPY/ADD,
EXPOSE, STOPSIGNAL and VOLUME, and never in RUN, CMD or ENTRYPOINT (the shell
in the box does that). Heredoc bodies of COPY/ADD are expanded with quotes kept
(`quotes=False`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_SPECIAL = "@*#?-$!0"  # one-character special parameters: $?, $#, ...
_REGEX_SPECIAL = "[]{}.+()|^$"


class ExpandError(ValueError):
    """A word Docker would refuse: an unterminated quote, a bad `${...}`."""


def expand(word: str, env: Mapping[str, str], *, escape: str = "\\",
           quotes: bool = True) -> str:
    """`word` with its variables replaced (and its quotes removed, with `quotes`)."""
    return _Lexer(word, env, escape, quotes).run()[0]


def expand_words(word: str, env: Mapping[str, str], *, escape: str = "\\") -> list[str]:
    """`word` expanded, then split on whitespace that came from neither quotes nor
    escapes (how Docker reads each port of EXPOSE)."""
    return _Lexer(word, env, escape, True).run()[1]


class _Words:
    """The words of a result: whitespace from an expansion or the text splits,
    quoted or escaped text never does."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.buf = ""
        self.in_word = False

    def char(self, ch: str) -> None:
        if not ch.isspace():
            self.raw(ch)
        elif self.in_word and self.buf:
            self.words.append(self.buf)
            self.buf, self.in_word = "", False

    def text(self, s: str) -> None:
        for ch in s:
            self.char(ch)

    def raw(self, s: str) -> None:
        self.buf += s
        self.in_word = True

    def done(self) -> list[str]:
        if self.buf:
            self.words.append(self.buf)
            self.buf, self.in_word = "", False
        return self.words


class _Lexer:
    def __init__(self, word: str, env: Mapping[str, str], escape: str, quotes: bool) -> None:
        self.s = word
        self.pos = 0
        self.env = env
        self.escape = escape
        self.quotes = quotes

    def peek(self) -> str:
        return self.s[self.pos] if self.pos < len(self.s) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1 if ch else 0
        return ch

    def run(self) -> tuple[str, list[str]]:
        return self.until("", raw_escapes=False)

    def until(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """Read up to `stop` (consumed; "" for the end of the word)."""
        out: list[str] = []
        words = _Words()
        while self.peek():
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(out), words.done()
            if ch == "$":
                value = self.dollar()
                out.append(value)
                words.text(value)
            elif self.quotes and ch in "'\"":
                value = self.single() if ch == "'" else self.double()
                out.append(value)
                words.raw(value)
            else:
                self.next()
                if ch == self.escape:
                    if raw_escapes:
                        out.append(ch)
                        words.raw(ch)
                    ch = self.next()
                    if not ch:
                        break
                    words.raw(ch)
                else:
                    words.char(ch)
                out.append(ch)
        if stop:
            raise ExpandError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out), words.done()

    def single(self) -> str:
        self.next()
        end = self.s.find("'", self.pos)
        if end < 0:
            raise ExpandError("unexpected end of statement while looking for matching "
                              "single-quote")
        value, self.pos = self.s[self.pos:end], end + 1
        return value

    def double(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                raise ExpandError("unexpected end of statement while looking for matching "
                                  "double-quote")
            if ch == '"':
                self.next()
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.next()
            if ch == self.escape:
                if not self.peek():
                    continue  # an escape at the end of the word is dropped
                if self.peek() in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        ch = self.peek()
        if ch.isdigit():
            start = self.pos
            while self.peek().isdigit():
                self.next()
            return self.s[start:self.pos]
        if ch and ch in _SPECIAL:
            return self.next()
        start = self.pos
        while self.peek() and (self.peek().isalnum() or self.peek() == "_"):
            self.next()
        return self.s[start:self.pos]

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            return self.env.get(name, "") if name else "$"
        self.next()
        if not self.peek():
            raise ExpandError("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise ExpandError("syntax error: bad substitution")
        name = self.name()
        op = self.next()
        if op == "}":
            return self.env.get(name, "")
        if op == "/":
            return self.replace(name)
        null_is_unset = op == ":"
        if null_is_unset:
            op = self.next()
            if op not in ("-", "+", "?"):
                raise ExpandError(f"unsupported modifier (:{op}) in substitution")
        if not op or op not in "-+?#%":
            raise ExpandError(f"unsupported modifier ({op}) in substitution" if op else
                              "syntax error: missing '}'")
        try:
            word = self.until("}", raw_escapes=op in "#%")[0]
        except ExpandError:
            raise ExpandError("syntax error: missing '}'") from None
        value = self.env.get(name)
        unset = value is None or (null_is_unset and value == "")
        if op == "-":
            return word if unset else value or ""
        if op == "+":
            return "" if unset else word
        if op == "?":
            if unset:
                default = "is not allowed to be " + ("unset" if value is None else "empty")
                raise ExpandError(f"{name}: {word or default}")
            return value or ""
        greedy = word[:1] == op
        pattern = word[1:] if greedy else word
        if op == "#":
            return _trim_prefix(pattern, value or "", greedy)
        return _trim_prefix(_reverse_pattern(pattern), (value or "")[::-1], greedy)[::-1]

    def replace(self, name: str) -> str:
        every = self.peek() == "/"
        if every:
            self.next()
        try:
            pattern = self.until("/", raw_escapes=True)[0]
            replacement = self.until("}", raw_escapes=True)[0]
        except ExpandError:
            raise ExpandError("syntax error: missing '/' or '}' in ${}") from None
        regex = _pattern_regex(pattern, greedy=True)
        return regex.sub(lambda _: replacement, self.env.get(name, ""), count=0 if every else 1)


def _pattern_regex(pattern: str, greedy: bool, anchored: bool = False) -> re.Pattern[str]:
    """A shell pattern (`*`, `?`, `\\` escapes; no brackets) as a regular expression."""
    out = "^" if anchored else ""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out += ".*" if greedy else ".*?"
        elif ch == "?":
            out += "."
        elif ch == "\\":
            nxt = pattern[i:i + 1]
            if nxt in ("}", "/"):
                continue  # escaped only to get past the ${} parser
            if nxt not in ("*", "?", "\\"):
                raise ExpandError(f"invalid escape '\\{nxt}' in pattern {pattern!r}")
            out += "\\" + nxt
            i += 1
        else:
            out += "\\" + ch if ch in _REGEX_SPECIAL else re.escape(ch)
    return re.compile(out, re.S)


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    match = _pattern_regex(pattern, greedy, anchored=True).match(value)
    return value[match.end():] if match else value


def _reverse_pattern(pattern: str) -> str:
    """The pattern read backwards, an escape kept in front of what it escapes, so
    that the shortest suffix becomes the shortest prefix of the reversed value."""
    tokens: list[str] = []
    i = 0
    while i < len(pattern):
        step = 2 if pattern[i] == "\\" and i + 1 < len(pattern) else 1
        tokens.append(pattern[i:i + step])
        i += step
    return "".join(reversed(tokens))
