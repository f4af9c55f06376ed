"""Frame codec of protocol v1 (docs/protocol.md).

Everything decoded here comes from the guest and is untrusted: the decoder
bounds every frame, rejects unknown types, and never buffers more than one
maximal frame.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# The constants, frame types and capabilities are defined once, in proto/proto.go,
# for the agent, the shim and this module (generated from it: wire_gen.py).
from microbox.agent.wire_gen import CHUNK_SIZE as CHUNK_SIZE
from microbox.agent.wire_gen import HEADER_SIZE as HEADER_SIZE
from microbox.agent.wire_gen import MAX_PAYLOAD as MAX_PAYLOAD
from microbox.agent.wire_gen import RAW_TYPES as RAW_TYPES
from microbox.agent.wire_gen import VERSION as VERSION
from microbox.agent.wire_gen import Capability as Capability
from microbox.agent.wire_gen import T as T

HEADER = struct.Struct(">IBI")  # length, type, stream: HEADER_SIZE bytes
CHUNK = CHUNK_SIZE


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid v1 frame."""


_KNOWN = frozenset(int(t) for t in T)


@dataclass(frozen=True)
class Frame:
    type: T
    stream: int
    payload: bytes

    def json(self) -> dict[str, Any]:
        """Decode a JSON payload into an object; anything else is a protocol error."""
        if self.type in RAW_TYPES:
            raise ProtocolError(f"frame type {self.type.name} carries raw bytes, not JSON")
        try:
            value = json.loads(self.payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"{self.type.name} payload is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ProtocolError(f"{self.type.name} payload is not a JSON object")
        return value


class HelloReply(Mapping[str, Any]):
    """The agent's HELLO_REPLY (docs/protocol.md): who answered and what it can
    do. It reads as the reply's JSON object too (`reply["agent"]`). A plain
    class: every command that reaches a box imports this module, and a
    dataclass costs ~1 ms of import."""

    __slots__ = ("agent", "body", "capabilities", "session", "version")

    def __init__(self, *, version: int, session: str, agent: str,
                 capabilities: frozenset[str], body: dict[str, Any]) -> None:
        self.version = version
        self.session = session
        self.agent = agent
        self.capabilities = capabilities
        self.body = body

    def __repr__(self) -> str:
        return (f"HelloReply(version={self.version}, session={self.session!r}, "
                f"agent={self.agent!r}, capabilities={sorted(self.capabilities)})")

    @classmethod
    def of(cls, body: dict[str, Any]) -> HelloReply:
        """From the reply's JSON object, which comes from the guest: a field of
        the wrong type reads as absent (no capabilities, an empty name)."""
        caps = body.get("capabilities")
        version = body.get("version")
        return cls(
            version=version if isinstance(version, int) else 0,
            session=str(body.get("session", "")),
            agent=untrusted_text(str(body.get("agent", ""))),
            capabilities=frozenset(c for c in caps if isinstance(c, str))
            if isinstance(caps, list) else frozenset(),
            body=body,
        )

    def supports(self, capability: Capability) -> bool:
        """Whether the agent lists `capability`: the host relies on nothing else
        (docs/protocol.md, "Growing the protocol")."""
        return capability in self.capabilities

    def __getitem__(self, key: str) -> Any:
        return self.body[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.body)

    def __len__(self) -> int:
        return len(self.body)


def untrusted_text(text: str, limit: int = 1000) -> str:
    """Guest-supplied text made safe to show: no control characters (no terminal
    escape sequences), bounded length."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return clean + ("…" if len(text) > limit else "")


def wire(text: str) -> str | dict[str, str]:
    """A byte string (argv, env, cwd, path) for the wire (docs/protocol.md, "Byte strings").

    Bytes that are not UTF-8 reach Python as lone surrogates (the
    surrogateescape error handler of sys.argv and os.fsdecode); they travel as
    {"b64": ...} so that the guest gets the original bytes.
    """
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise ValueError(f"{text!r} holds characters that are neither text nor bytes") from None
    return {"b64": base64.b64encode(raw).decode()}


def encode(type_: T, stream: int, payload: bytes | dict[str, Any] = b"") -> bytes:
    """Serialize one frame. A dict payload is JSON-encoded."""
    if isinstance(payload, dict):
        body = json.dumps(payload, separators=(",", ":")).encode()
    else:
        body = bytes(payload)
    if len(body) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(body)} bytes exceeds {MAX_PAYLOAD}")
    if not 0 <= stream <= 0xFFFFFFFF:
        raise ValueError(f"stream id {stream} out of range")
    return HEADER.pack(len(body) + 5, int(type_), stream) + body


class Decoder:
    """Incremental decoder: feed() bytes, get back whole frames.

    Holds at most one partial frame (<= MAX_PAYLOAD + header) at a time.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= HEADER_SIZE:
            length, type_, stream = HEADER.unpack_from(self._buf)
            if length < 5 or length > MAX_PAYLOAD + 5:
                raise ProtocolError(f"frame length {length} outside 5..{MAX_PAYLOAD + 5}")
            if type_ not in _KNOWN:
                raise ProtocolError(f"unknown frame type 0x{type_:02x}")
            end = 4 + length
            if len(self._buf) < end:
                break
            frames.append(Frame(T(type_), stream, bytes(self._buf[HEADER_SIZE:end])))
            del self._buf[:end]
        return frames

    @property
    def pending(self) -> int:
        """Bytes buffered towards the next frame."""
        return len(self._buf)


MAX_CONTROL = 64 * 1024  # bound on a HELLO_REPLY or ERROR found by scanning


class ControlScanner:
    """Finds stream-0 HELLO_REPLY and ERROR frames in a stream of unknown alignment.

    A new session may begin with the tail of a frame the agent was writing to
    a client that died (docs/protocol.md, "Losing and regaining sync"), so the
    handshake cannot decode from its first byte. The agent writes whole
    frames, and its JSON payloads start with '{': a header whose type, stream
    and first payload byte fit, and whose payload is a JSON object, is taken
    as a frame boundary. Holds at most one control frame's worth of bytes.
    """

    _MARKS = tuple(bytes([t]) + b"\0\0\0\0{" for t in (T.HELLO_REPLY, T.ERROR))

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        found: list[Frame] = []
        pos = 0  # the scan resumes here
        wait: int | None = None  # the first candidate whose payload is still arriving
        while (mark := self._next_mark(pos)) >= 0:
            start = mark - 4
            pos = start + 1
            length = int.from_bytes(buf[start:start + 4], "big")
            end = start + 4 + length
            if not 5 < length <= MAX_CONTROL + 5:
                continue
            if end > len(buf):
                wait = start if wait is None else wait
                continue
            frame = Frame(T(buf[start + 4]), 0, bytes(buf[start + HEADER_SIZE:end]))
            try:
                frame.json()
            except ProtocolError:
                continue
            found.append(frame)
            pos, wait = end, None
        cut = max(pos, len(buf) - HEADER_SIZE)  # the tail may begin a header
        del buf[:cut if wait is None else min(wait, cut)]
        return found

    def _next_mark(self, pos: int) -> int:
        hits = [i for i in (self._buf.find(m, pos + 4) for m in self._MARKS) if i >= 0]
        return min(hits, default=-1)

    @property
    def pending(self) -> int:
        return len(self._buf)
