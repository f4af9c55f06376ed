"""What a Dockerfile means, as the executor of a build needs it: stages, and
instructions with everything Docker works out before running them (expanded
words, the shell form turned into an argv, the build environment in effect, the
destination of a COPY made absolute).

`Instruction.cache_key` is the instruction's part of a build cache key: the
executor chains it after its parent's key (the base image digest for the first)
and, for COPY/ADD, adds `Context.hash_sources` of the sources."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from microbox.build.syntax import Heredoc
from microbox.images.config import ImageConfig

DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Where a RUN heredoc with a `#!` line is written before it is run, as BuildKit
# does: under /dev, which no image layer keeps.
SCRIPT_DIR = "/dev/pipes/"

__all__ = ["DEFAULT_PATH", "DEFAULT_SHELL", "SCRIPT_DIR", "Heredoc", "Instruction", "Stage"]


@dataclass(frozen=True)
class Instruction:
    """One instruction of a stage.

    `args` are the words as Docker reads them, expanded where Docker expands:
    RUN/CMD/ENTRYPOINT the JSON list or `[text]` of the shell form (never
    expanded), COPY/ADD the sources then the destination, ENV/LABEL `k=v`,
    ARG `k=v` or `k` (its value in effect), WORKDIR/USER/STOPSIGNAL one word,
    EXPOSE the ports as `N/proto`, VOLUME the paths, SHELL the list,
    HEALTHCHECK the test (`["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", text]`).

    The fields after `heredocs` are the executor's: what to run or copy and the
    state it runs in. `env` is the environment at this instruction (the image's
    ENV then the ARG values in scope, in Docker's order): what RUN runs with,
    where ARG values are not kept in the image config. `build_args` are the
    ARG values in scope.
    """

    line: int
    keyword: str
    original: str
    args: list[str]
    json_form: bool = False
    flags: dict[str, str] = field(default_factory=dict)
    heredocs: list[Heredoc] = field(default_factory=list)
    end_line: int = 0
    # ENV, LABEL, MAINTAINER (as the label `maintainer`), ARG (those with a value)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    # RUN, CMD, ENTRYPOINT, HEALTHCHECK CMD: the argv, the shell form wrapped in
    # the SHELL in effect. RUN with `script`: write it to command[0] (mode 0755)
    # in the box, then run command.
    command: list[str] = field(default_factory=list)
    script: str | None = None
    network: str = "default"  # RUN --network: "default" or "none"
    # COPY/ADD: sources in the context (or in from_stage/from_image), heredoc
    # sources not included (they are `heredocs`, already expanded and chomped);
    # `dest` is absolute and keeps a trailing "/" (a directory).
    add: bool = False  # ADD: the executor extracts a local tar archive source
    sources: list[str] = field(default_factory=list)
    dest: str = ""
    from_stage: int | None = None
    from_image: str | None = None
    chown: str | None = None
    chmod: int | None = None
    # the state the instruction runs in
    env: dict[str, str] = field(default_factory=dict)
    build_args: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"  # for WORKDIR, the directory it makes (and moves to)
    user: str = ""
    shell: list[str] = field(default_factory=lambda: list(DEFAULT_SHELL))

    @property
    def cache_key(self) -> str:
        """A stable string for this instruction in the build cache: what it does
        and, for RUN and WORKDIR, the state it does it in (Docker: the ARG
        values in scope are part of a RUN's key). Never the line number, so
        that moving an instruction down does not invalidate it. An ARG's key is
        its declaration as written: Docker's cache misses at the first RUN that
        sees a changed value, not at the ARG."""
        if self.keyword == "ARG":
            return json.dumps({"keyword": "ARG", "original": self.original},
                              separators=(",", ":"))
        key: dict[str, object] = {"keyword": self.keyword, "args": self.args,
                                  "json": self.json_form, "flags": self.flags}
        if self.heredocs:
            key["heredocs"] = [[h.name, h.content, h.expand, h.chomp] for h in self.heredocs]
        if self.keyword == "RUN":
            key.update(command=self.command, script=self.script, network=self.network,
                       env=self.env, build_args=self.build_args, workdir=self.workdir,
                       user=self.user)
        elif self.keyword in ("COPY", "ADD"):
            key.update(sources=self.sources, dest=self.dest, from_stage=self.from_stage,
                       from_image=self.from_image, chown=self.chown, chmod=self.chmod)
        elif self.keyword == "WORKDIR":
            key.update(workdir=self.workdir, user=self.user)
        elif self.pairs:
            key["pairs"] = self.pairs
        return json.dumps(key, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Stage:
    """A FROM and its instructions. `base` is the image reference, "scratch",
    or the stage it builds on (then `base_stage` is its index); `deps` are the
    stages it needs built first (its base and COPY --from). `config` and the
    fields after it are the image config at the end of the stage."""

    index: int
    name: str | None
    base: str
    base_stage: int | None
    instructions: list[Instruction]
    line: int
    original: str = ""
    platform: str | None = None
    deps: list[int] = field(default_factory=list)
    config: ImageConfig = field(default_factory=ImageConfig)
    labels: dict[str, str] = field(default_factory=dict)
    ports: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    stop_signal: str | None = None
    healthcheck: list[str] | None = None
    shell: list[str] = field(default_factory=lambda: list(DEFAULT_SHELL))

    def run_envs(self) -> Iterator[tuple[Instruction, dict[str, str]]]:
        """Each RUN with the environment it runs in (the image's ENV and the
        build ARGs in scope, which Docker passes to RUN without keeping them in
        the image)."""
        for instruction in self.instructions:
            if instruction.keyword == "RUN":
                yield instruction, instruction.env

    @property
    def label(self) -> str:
        """How progress output names the stage: its name or `stage-N`."""
        return self.name or f"stage-{self.index}"
