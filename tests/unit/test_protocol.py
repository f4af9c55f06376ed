"""The frame codec against the golden frames shared with the Go agent, and its
limits against hostile input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microbox.agent.protocol import (
    HEADER,
    HEADER_SIZE,
    MAX_CONTROL,
    MAX_PAYLOAD,
    RAW_TYPES,
    Capability,
    ControlScanner,
    Decoder,
    HelloReply,
    ProtocolError,
    T,
    encode,
    untrusted_text,
    wire,
)
from microbox.artifacts import gobuild

GOLDEN = Path(__file__).resolve().parents[2] / "docs" / "protocol-golden.json"


def golden() -> list[dict[str, Any]]:
    data = json.loads(GOLDEN.read_text())
    assert data["version"] == 1
    frames: list[dict[str, Any]] = data["frames"]
    return frames


@pytest.mark.parametrize("entry", golden(), ids=lambda e: e["name"])
def test_golden_frame_decodes_and_reencodes(entry: dict[str, Any]) -> None:
    raw = bytes.fromhex(entry["hex"])
    frames = Decoder().feed(raw)
    assert len(frames) == 1
    frame = frames[0]
    assert frame.type == T(entry["type"]) and frame.type.name == entry["type_name"]
    assert frame.stream == entry["stream"]
    if "json" in entry:
        assert frame.type not in RAW_TYPES
        assert frame.json() == entry["json"]
        assert encode(frame.type, frame.stream, entry["json"]) == raw
    else:
        assert frame.payload == bytes.fromhex(entry["raw_hex"])
        assert encode(frame.type, frame.stream, frame.payload) == raw


def test_golden_covers_every_type() -> None:
    assert {T(e["type"]) for e in golden()} == set(T)


def test_frames_split_at_every_byte() -> None:
    stream = b"".join(bytes.fromhex(e["hex"]) for e in golden())
    dec = Decoder()
    got = []
    for i in range(len(stream)):
        got += dec.feed(stream[i:i + 1])
    assert [f.type for f in got] == [T(e["type"]) for e in golden()]
    assert dec.pending == 0


@pytest.mark.parametrize("length", [0, 4, MAX_PAYLOAD + 6, 0xFFFFFFFF])
def test_length_out_of_range_is_rejected_before_buffering(length: int) -> None:
    with pytest.raises(ProtocolError, match="length"):
        Decoder().feed(HEADER.pack(length, int(T.STDOUT), 1))


def test_unknown_type_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="unknown frame type 0x55"):
        Decoder().feed(HEADER.pack(5, 0x55, 1))


def test_json_payload_errors() -> None:
    (bad,) = Decoder().feed(encode(T.EXIT, 1, b"\xff not json"))
    with pytest.raises(ProtocolError, match="not valid JSON"):
        bad.json()
    (arr,) = Decoder().feed(encode(T.EXIT, 1, b"[1, 2]"))
    with pytest.raises(ProtocolError, match="not a JSON object"):
        arr.json()
    (raw,) = Decoder().feed(encode(T.STDOUT, 1, b"{}"))
    with pytest.raises(ProtocolError, match="raw bytes"):
        raw.json()


def test_encode_refuses_oversized_payload() -> None:
    with pytest.raises(ValueError):
        encode(T.DATA, 1, b"x" * (MAX_PAYLOAD + 1))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_arbitrary_bytes_never_hang_or_grow_unbounded(chunks: list[bytes]) -> None:
    dec = Decoder()
    try:
        for c in chunks:
            dec.feed(c)
            assert dec.pending <= MAX_PAYLOAD + 9
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(RAW_TYPES)), st.integers(0, 2**32 - 1), st.binary(max_size=2048))
def test_raw_roundtrip(type_: T, stream: int, payload: bytes) -> None:
    (frame,) = Decoder().feed(encode(type_, stream, payload))
    assert (frame.type, frame.stream, frame.payload) == (type_, stream, payload)


def test_untrusted_text_has_no_escape_sequences() -> None:
    assert untrusted_text("ok\x1b[2Jcleared\x07", 100) == "ok?[2Jcleared?"
    assert untrusted_text("x" * 20, 5) == "xxxxx…"


def test_scanner_finds_control_frames_split_anywhere() -> None:
    """Stale bytes of unknown alignment, then the frames a new session starts with.

    The scanner yields every well-formed control frame it finds; the handshake
    tells ours apart by its nonce."""
    stale = (encode(T.STDOUT, 4, b"\x00\x00\x00\x07\x02\x00\x00\x00\x00{}")[3:]
             + HEADER.pack(5000, int(T.HELLO_REPLY), 0) + b"{" + b"\x02\0\0\0\0[")
    error = encode(T.ERROR, 0, {"kind": "protocol", "message": "m"})
    hello = encode(T.HELLO_REPLY, 0, {"version": 1, "session": "s"})
    stream = stale + error + hello
    for step in range(1, len(stream) + 1):
        sc = ControlScanner()
        got = [f for i in range(0, len(stream), step) for f in sc.feed(stream[i:i + step])]
        assert [(f.type, f.json()) for f in got] == [
            (T.HELLO_REPLY, {}),  # a lookalike inside stale output: the nonce check skips it
            (T.ERROR, {"kind": "protocol", "message": "m"}),
            (T.HELLO_REPLY, {"version": 1, "session": "s"}),
        ], step
        assert sc.pending == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=4096), max_size=40))
def test_scanner_stays_bounded(chunks: list[bytes]) -> None:
    sc = ControlScanner()
    for c in chunks:
        sc.feed(c)
        assert sc.pending <= MAX_CONTROL + HEADER_SIZE + len(c)


def test_byte_strings_match_the_golden_exec() -> None:
    """Arguments that are not UTF-8 (lone surrogates from surrogateescape) travel as base64."""
    from microbox.agent.ops import ExecRequest

    (entry,) = [e for e in golden() if e["name"] == "exec_bytes"]
    req = ExecRequest(argv=["printf", "%s", "\udcff"], env={"B": "\udc80"})
    assert req.payload() == entry["json"]
    assert wire("plain é") == "plain é"
    with pytest.raises(ValueError):
        wire("\ud800")  # a surrogate no byte decodes to


# -- the one definition (proto/proto.go) and its generated Python copy --------

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = Path("scripts") / "gen_protocol.py"


def _generate(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(root / GENERATOR), *args],
                          capture_output=True, text=True, timeout=60)


def test_the_generated_module_is_what_the_go_definition_says() -> None:
    done = _generate(ROOT, "--check")
    assert done.returncode == 0, done.stderr


def test_check_names_the_command_once_the_definition_changes(tmp_path: Path) -> None:
    for rel in (GENERATOR, Path("proto/proto.go"), Path("src/microbox/agent/wire_gen.py")):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    go = tmp_path / "proto" / "proto.go"
    text = go.read_text()  # a capability before the last one (gofmt's alignment aside)
    assert text.count("\tCapMux ") == 1
    go.write_text(text.replace("\tCapMux ", '\tCapZeroCopy = "zero_copy"\n\tCapMux '))
    done = _generate(tmp_path, "--check")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "src/microbox/agent/wire_gen.py is not what proto/proto.go defines; "
        "regenerate it with: python3 scripts/gen_protocol.py"]
    assert _generate(tmp_path).returncode == 0
    assert _generate(tmp_path, "--check").returncode == 0
    assert 'ZERO_COPY = "zero_copy"' in (tmp_path / "src/microbox/agent/wire_gen.py").read_text()
    go.write_text(go.read_text() + "var Extra = 1\n")  # a line the generator cannot read
    done = _generate(tmp_path, "--check")
    assert done.returncode == 2 and "proto/proto.go:" in done.stderr


def test_the_header_layout_has_the_defined_size() -> None:
    assert HEADER.size == HEADER_SIZE == 9
    assert json.dumps([Capability.WINDOW]) == '["window"]'  # str-valued: the wire is as before


def test_an_edit_of_the_definition_rebuilds_both_programs(tmp_path: Path) -> None:
    for program in ("agent", "shim"):
        uses = [d.resolve() for _, d in gobuild.modules(gobuild.source_dir(program))]
        assert (ROOT / "proto") in uses, program
    agent = tmp_path / "guest" / "agent"
    agent.mkdir(parents=True)
    (agent / "go.mod").write_text("module m/agent\n\nrequire m/proto v0.0.0\n\n"
                                  "replace m/proto => ../../proto // the definition\n")
    (tmp_path / "proto").mkdir()
    definition = tmp_path / "proto" / "proto.go"
    definition.write_text("package proto\n")
    before = gobuild.cache_key(agent)
    definition.write_text("package proto // edited\n")
    assert gobuild.cache_key(agent) != before


def test_a_wheel_keeps_the_path_from_each_program_to_the_definition() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    placed = conf["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    for program in ("agent", "shim"):
        src = gobuild.source_dir(program)
        for rel, d in gobuild.modules(src)[1:]:
            here = os.path.relpath(d.resolve(), ROOT)
            there = PurePosixPath(placed[os.path.relpath(src, ROOT)]) / rel
            assert os.path.normpath(there) == placed[here], (program, rel)


def test_hello_reply_says_what_the_agent_supports() -> None:
    (entry,) = [e for e in golden() if e["name"] == "hello_reply"]
    reply = HelloReply.of(entry["json"])
    assert (reply.version, reply.session, reply.agent) == (1, "s1", "microbox-agent 1")
    assert all(reply.supports(c) for c in Capability if c != Capability.MUX)
    assert not reply.supports(Capability.MUX)  # the shim's, never an agent's
    assert reply["agent"] == "microbox-agent 1" and dict(reply) == entry["json"]


@pytest.mark.parametrize("caps", [None, "exec tar", {"tar": True}, [1, ["tar"], None]])
def test_hello_reply_from_a_hostile_agent_supports_nothing(caps: object) -> None:
    reply = HelloReply.of({"version": 1, "session": "s", "agent": "\x1b[2J", "capabilities": caps})
    assert not any(reply.supports(c) for c in Capability)
    assert reply.agent == "?[2J"
