#!/usr/bin/env python3
"""Write the host's copy of protocol v1's constants from their one definition.

proto/proto.go (a Go package the agent and the shim import) defines the limits,
the frame types and their names, which types carry raw bytes, and the capability
names. This script reads that file with strict line patterns, refusing any line
it does not know (so nothing there is skipped in silence), and writes
src/microbox/agent/wire_gen.py, which src/microbox/agent/protocol.py imports.

    python3 scripts/gen_protocol.py           rewrite wire_gen.py
    python3 scripts/gen_protocol.py --check   exit 1 if wire_gen.py differs (make lint)

Standard library only: it runs before any environment is set up.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path("proto/proto.go")
OUTPUT = Path("src/microbox/agent/wire_gen.py")
COMMAND = "python3 scripts/gen_protocol.py"

_IDENT = r"([A-Z][A-Za-z0-9]*)"
_COMMENT = r"(?:\s+//\s?(.*))?"
# Outside any block.
_TOP = re.compile(r"(//.*|package proto)?")
_OPEN = {
    "const (": "const",
    "var Names = map[byte]string{": "names",
    "var Raw = map[byte]bool{": "raw",
}
# Inside `const (`: a limit (an integer in a form Python reads alike), a frame
# type, or a capability.
_LIMIT = re.compile(rf"\t{_IDENT}\s+= (\d+|0x[0-9a-f]+|\d+ << \d+|\d+ \* \d+){_COMMENT}")
_TYPE = re.compile(rf"\t{_IDENT}\s+byte = 0x([0-9a-f]{{2}}){_COMMENT}")
_CAP = re.compile(rf"\tCap{_IDENT}\s+= \"([a-z][a-z0-9_]*)\"{_COMMENT}")
_NAME = re.compile(rf"\t{_IDENT}:\s+\"([A-Z_]+)\",")
_RAW = re.compile(rf"\t{_IDENT}:\s+true,")
_INNER = re.compile(r"(\t//.*)?")


class DefinitionError(Exception):
    pass


@dataclass
class Definition:
    limits: list[tuple[str, str, str]] = field(default_factory=list)  # ident, value, comment
    types: list[tuple[str, int]] = field(default_factory=list)  # ident, code
    names: dict[str, str] = field(default_factory=dict)  # ident -> wire name
    raw: list[str] = field(default_factory=list)  # idents
    caps: list[tuple[str, str, str]] = field(default_factory=list)  # ident, value, comment


def upper_snake(ident: str) -> str:
    """HelloReply -> HELLO_REPLY, MaxPayload -> MAX_PAYLOAD, TTY -> TTY."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", ident).upper()


def parse(text: str) -> Definition:
    d = Definition()
    block: str | None = None
    for n, line in enumerate(text.splitlines(), 1):
        try:
            block = _line(d, block, line)
        except DefinitionError as exc:
            raise DefinitionError(f"{SOURCE}:{n}: {exc}: {line.strip()!r}") from None
    if block is not None:
        raise DefinitionError(f"{SOURCE}: a block does not end")
    _validate(d)
    return d


def _line(d: Definition, block: str | None, line: str) -> str | None:
    if block is None:
        if line in _OPEN:
            return _OPEN[line]
        if _TOP.fullmatch(line):
            return None
        raise DefinitionError("not a line of the definition's form")
    if line == (")" if block == "const" else "}"):
        return None
    if _INNER.fullmatch(line):
        return block
    if block == "const":
        if m := _CAP.fullmatch(line):
            d.caps.append((m[1], m[2], m[3] or ""))
        elif m := _TYPE.fullmatch(line):
            d.types.append((m[1], int(m[2], 16)))
        elif m := _LIMIT.fullmatch(line):
            d.limits.append((m[1], m[2], m[3] or ""))
        else:
            raise DefinitionError("not a limit, frame type or capability")
    elif block == "names" and (m := _NAME.fullmatch(line)):
        if m[1] in d.names:
            raise DefinitionError(f"{m[1]} is named twice")
        d.names[m[1]] = m[2]
    elif block == "raw" and (m := _RAW.fullmatch(line)):
        d.raw.append(m[1])
    else:
        raise DefinitionError(f"not an entry of {block}")
    return block


def _validate(d: Definition) -> None:
    idents = [i for i, _ in d.types]
    codes = [c for _, c in d.types]
    if len(set(idents)) != len(idents) or len(set(codes)) != len(codes):
        raise DefinitionError(f"{SOURCE}: two frame types share a name or a code")
    for ident in idents:
        if d.names.get(ident) != upper_snake(ident):
            raise DefinitionError(f"{SOURCE}: frame type {ident} must be named "
                                  f"{upper_snake(ident)!r} in Names")
    for ident in [*d.names, *d.raw]:
        if ident not in idents:
            raise DefinitionError(f"{SOURCE}: {ident} is not a frame type")
    values = [v for _, v, _ in d.caps]
    for ident, value, _ in d.caps:
        if upper_snake(ident) != value.upper():
            raise DefinitionError(f"{SOURCE}: capability Cap{ident} is {value!r}; "
                                  "its name must spell its value")
    if len(set(values)) != len(values):
        raise DefinitionError(f"{SOURCE}: two capabilities share a name")


def _comment(text: str) -> str:
    return f"  # {text}" if text else ""


def render(d: Definition) -> str:
    out = [
        f"# Generated by scripts/gen_protocol.py from {SOURCE}; do not edit.",
        f"# Regenerate: {COMMAND} (make lint runs it with --check).",
        '"""Protocol v1\'s limits, frame types and capability names (docs/protocol.md),',
        f'as {SOURCE} defines them for the agent and the shim."""',
        "",
        "import enum",
        "",
    ]
    out += [f"{upper_snake(i)} = {v}{_comment(c)}" for i, v, c in d.limits]
    out += ["", "", "class T(enum.IntEnum):",
            '    """Frame types: the byte on the wire, under the name docs/protocol.md uses."""',
            ""]
    out += [f"    {d.names[i]} = 0x{c:02X}" for i, c in d.types]
    out += ["", "",
            "# The types whose payload is raw bytes; every other type carries one JSON object.",
            "RAW_TYPES = frozenset({"]
    out += [f"    T.{d.names[i]}," for i in d.raw]
    out += ["})", "", "", "class Capability(enum.StrEnum):",
            '    """What a HELLO_REPLY may list; a str, so that it is its own name on the wire."""',
            ""]
    out += [f'    {upper_snake(i)} = "{v}"{_comment(c)}' for i, v, c in d.caps]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help=f"exit 1 if {OUTPUT} differs from what {SOURCE} defines")
    args = ap.parse_args(argv)
    try:
        text = render(parse((ROOT / SOURCE).read_text()))
    except (OSError, DefinitionError) as exc:
        print(f"gen_protocol: {exc}", file=sys.stderr)
        return 2
    out = ROOT / OUTPUT
    current = out.read_text() if out.exists() else None
    if args.check:
        if current != text:
            print(f"{OUTPUT} is not what {SOURCE} defines; regenerate it with: {COMMAND}",
                  file=sys.stderr)
            return 1
        return 0
    if current != text:
        out.write_text(text)
        print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
