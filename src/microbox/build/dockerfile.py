"""Dockerfiles into build plans, with Docker's (BuildKit's) semantics.

`parse` reads the text (syntax.py), splits it into stages at each FROM, works
out the global ARGs (those before the first FROM: usable in FROM lines, and in
a stage only where an ARG of the same name declares them again), keeps the
stages the target needs (the last stage, or --target, and what they build FROM
or COPY --from: BuildKit skips the others), and walks each kept stage
(evaluate.py), expanding words as Docker does.

Expansion inside a stage also sees the base image's ENV (`FROM golang` then
`WORKDIR $GOPATH/src`), which only a pull reveals: `Plan.with_base_config`
gives a stage its base image's config and returns the plan walked again.
Until then a stage FROM an image starts as FROM scratch does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from microbox.build import syntax
from microbox.build.evaluate import (
    Scope,
    State,
    arg_words,
    parse_flags,
    resolve_from,
    stage_of,
    walk,
)
from microbox.build.expand import ExpandError, expand
from microbox.build.model import Heredoc, Instruction, Stage
from microbox.build.syntax import RawInstruction, Source, fail
from microbox.errors import UsageError
from microbox.images.config import ImageConfig

__all__ = ["Heredoc", "Instruction", "Plan", "Stage", "parse"]

# The platform ARGs BuildKit defines before the first FROM (`FROM
# --platform=$BUILDPLATFORM`, `ARG TARGETARCH` in a stage): microbox builds
# linux/amd64 on linux/amd64.
PLATFORM_ARGS = {"TARGETPLATFORM": "linux/amd64", "TARGETOS": "linux", "TARGETARCH": "amd64",
                 "TARGETVARIANT": "", "BUILDPLATFORM": "linux/amd64", "BUILDOS": "linux",
                 "BUILDARCH": "amd64", "BUILDVARIANT": ""}
PLATFORMS = ("linux/amd64", "linux/x86_64", "linux/amd64/v1", "linux/amd64/v2",
             "linux/amd64/v3")
# Build args Docker takes without an ARG (and microbox ignores): no warning.
PROXY_ARGS = frozenset(k for name in ("http_proxy", "https_proxy", "ftp_proxy", "no_proxy",
                                      "all_proxy") for k in (name, name.upper()))
_STAGE_NAME = re.compile(r"[a-z][a-z0-9-_.]*\Z")


@dataclass(frozen=True)
class _Inputs:
    """What a plan is computed from, kept to walk it again with base configs."""

    source: Source
    build_args: dict[str, str]
    target: str | None
    path: str
    bases: dict[int, ImageConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """The stages to build, in order (each after the stages it needs; the last
    is the target), and the warnings to show: Docker's (build args nothing
    consumed, empty continuation lines) and what microbox keeps but does not
    honour (VOLUME, HEALTHCHECK). Stages keep their index in the file."""

    stages: list[Stage]
    warnings: list[str]
    global_args: dict[str, str] = field(default_factory=dict)
    escape: str = "\\"
    inputs: _Inputs | None = field(default=None, repr=False, compare=False)

    @property
    def target(self) -> Stage:
        return self.stages[-1]

    def stage(self, index: int) -> Stage:
        """The kept stage with this index in the file."""
        for stage in self.stages:
            if stage.index == index:
                return stage
        raise KeyError(f"stage {index} is not in the plan")

    def with_base_config(self, index: int, config: ImageConfig) -> Plan:
        """The plan walked again with `config` as the pulled base image's config
        of stage `index` (its ENV, WORKDIR, USER, ENTRYPOINT and CMD): that stage
        and the stages built FROM it change."""
        stage = self.stage(index)
        if stage.base_stage is not None or stage.base == "scratch" or self.inputs is None:
            raise ValueError(f"stage {index} is not built FROM an image")
        return _plan(replace(self.inputs, bases={**self.inputs.bases, index: config}))


def parse(text: str, *, build_args: Mapping[str, str], target: str | None,
          path: str = "Dockerfile") -> Plan:
    """The build plan of a Dockerfile; raises UsageError naming FILE:LINE."""
    return _plan(_Inputs(syntax.scan(text, path), dict(build_args), target, path))


@dataclass(frozen=True)
class _Header:
    """A stage as its FROM line gives it, before its instructions are walked."""

    stage: Stage
    raws: list[RawInstruction]


def _plan(inputs: _Inputs) -> Plan:
    path, escape = inputs.path, inputs.source.escape
    global_raws, groups = _split(inputs.source.instructions, path)
    global_args, declared = _global_args(global_raws, inputs, escape)
    names: dict[str, int] = {}
    headers = []
    for index, (from_raw, raws) in enumerate(groups):
        header = _header(index, from_raw, raws, global_args, names, path, escape)
        headers.append(header)
        if header.stage.name:
            names[header.stage.name] = index
    keep = _needed(headers, _target_index(headers, inputs.target, path))
    scope = Scope(path, escape, inputs.build_args, global_args, names)
    states: dict[int, State] = {}
    stages = []
    warnings = list(inputs.source.warnings)
    for header in headers:
        stage = header.stage
        if stage.index not in keep:
            continue
        if stage.base_stage is not None:
            state = states[stage.base_stage].child()
        else:
            state = State.of_image(inputs.bases.get(stage.index))
        instructions, names_declared, stage_warnings = walk(stage.index, header.raws, state,
                                                            scope)
        declared |= names_declared
        warnings += stage_warnings
        states[stage.index] = state
        stages.append(stage_of(state, replace(stage, instructions=instructions)))
    unused = sorted(set(inputs.build_args) - declared - PROXY_ARGS)
    if unused:
        warnings.append(f"[Warning] One or more build-args [{' '.join(unused)}] were not "
                        "consumed")
    return Plan(stages, warnings, global_args, escape, inputs)


def _split(raws: list[RawInstruction],
           path: str) -> tuple[list[RawInstruction], list[tuple[RawInstruction,
                                                                 list[RawInstruction]]]]:
    """The global ARGs, and each FROM with the instructions after it."""
    global_raws: list[RawInstruction] = []
    groups: list[tuple[RawInstruction, list[RawInstruction]]] = []
    for raw in raws:
        if raw.keyword == "FROM":
            groups.append((raw, []))
        elif groups:
            groups[-1][1].append(raw)
        elif raw.keyword == "ARG":
            global_raws.append(raw)
        else:
            raise fail(path, raw.line, f"{raw.keyword} comes before the first FROM; only ARG "
                       "may (for the FROM lines)")
    if not groups:
        raise UsageError(f"{path}: the file has no FROM; a Dockerfile starts with "
                         "FROM image (after any ARGs for it)")
    return global_raws, groups


def _global_args(raws: list[RawInstruction], inputs: _Inputs,
                 escape: str) -> tuple[dict[str, str], set[str]]:
    """The ARGs before the first FROM, each a --build-arg or its default
    (expanded with the global ARGs before it), and the names declared."""
    values = dict(PLATFORM_ARGS)
    declared: set[str] = set()
    for raw in raws:
        parse_flags(raw, inputs.path)
        for key, default in arg_words(raw, escape, inputs.path):
            declared.add(key)
            if key in inputs.build_args:
                values[key] = inputs.build_args[key]
            elif default is not None:
                values[key] = _expand(default, values, escape, inputs.path, raw)
    return values, declared


def _expand(word: str, env: Mapping[str, str], escape: str, path: str,
            raw: RawInstruction) -> str:
    try:
        return expand(word, env, escape=escape)
    except ExpandError as e:
        raise fail(path, raw.line, f"{raw.keyword} {word}: {e}") from None


def _header(index: int, raw: RawInstruction, raws: list[RawInstruction],
            global_args: dict[str, str], names: dict[str, int], path: str,
            escape: str) -> _Header:
    """FROM [--platform=P] image|stage [AS name], expanded with the global ARGs."""
    flags = parse_flags(raw, path)
    words = syntax.split_spaces(raw.rest)
    if not (len(words) == 1 or (len(words) == 3 and words[1].lower() == "as")):
        raise fail(path, raw.line, "FROM takes an image and optionally AS name")
    name = words[2].lower() if len(words) == 3 else None
    if name is not None and not _STAGE_NAME.match(name):
        raise fail(path, raw.line, f"stage name {words[2]!r} must start with a letter and "
                   "hold only letters, digits, '-', '_' and '.'")
    if name is not None and name in names:
        raise fail(path, raw.line, f"stage name {name!r} is already used by stage "
                   f"{names[name]}")
    base = _expand(words[0], global_args, escape, path, raw)
    if not base:
        raise fail(path, raw.line, f"FROM {words[0]} expands to an empty name (is the ARG "
                   "declared before the first FROM?)")
    platform = None
    if "platform" in flags:
        platform = _expand(flags["platform"], global_args, escape, path, raw).lower()
        if platform not in PLATFORMS:
            raise fail(path, raw.line, f"FROM --platform={platform}: microbox build builds "
                       "for linux/amd64 only")
    base_stage = names.get(base.lower())
    if base_stage is None and base.isdigit() and int(base) < index:
        base_stage = int(base)
    deps = [] if base_stage is None else [base_stage]
    for other in raws:
        if other.keyword in ("COPY", "ADD") and any(f.startswith("--from=") for f in
                                                    other.flags):
            value = next(f for f in other.flags if f.startswith("--from="))[7:]
            found = resolve_from(value, names, index, path, other.line)
            if found is not None and found not in deps:
                deps.append(found)
    stage = Stage(index, name, base, base_stage, [], raw.line, raw.original, platform, deps)
    return _Header(stage, raws)


def _target_index(headers: list[_Header], target: str | None, path: str) -> int:
    if target is None:
        return len(headers) - 1
    for header in headers:
        if header.stage.name == target.lower():
            return header.stage.index
    named = [h.stage.name for h in headers if h.stage.name]
    known = (f"its stages are {', '.join(named)}" if named
             else "it names no stage (FROM ... AS NAME)")
    raise UsageError(f"{path}: no stage named {target!r} for --target; {known}")


def _needed(headers: list[_Header], target: int) -> set[int]:
    """The target and every stage it needs, transitively."""
    keep: set[int] = set()
    todo = [target]
    while todo:
        index = todo.pop()
        if index not in keep:
            keep.add(index)
            todo += headers[index].stage.deps
    return keep
