"""`microbox build`: a Dockerfile's stages, step by step, in boxes.

The plan (dockerfile.py) says what each instruction does, expanded and
resolved. Every instruction has a cache key: its parent's key and its inputs
(`Instruction.cache_key`: the instruction, the environment and build
arguments a RUN sees; plus the hash of the files a COPY reads from the
context, or the `--from` stage's key). An instruction that only sets the
image's configuration (ENV, CMD, USER...) changes the key and nothing else.
One that changes files (RUN, COPY, ADD, WORKDIR) looks its key up in the
build cache (cache.py): a hit moves the stage onto the cached layer and
runs nothing; a miss runs the step in the stage's box (buildbox.py) and
cuts the disk into the step's layer. The last stage's top layer, flattened,
is the image (images/commit.py), stored under that layer's key, so an
unchanged rebuild finds the image made already and only names it.

`--no-cache` salts every key: each step runs, and what it makes is new (a
layer other cached steps stand on is never replaced).
"""

from __future__ import annotations

import io
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from microbox.build import cache, files
from microbox.build.buildbox import BuildBox
from microbox.build.cache import Top
from microbox.build.context import Context as BuildContext
from microbox.build.dockerfile import Instruction, Plan, Stage, parse
from microbox.build.report import Report
from microbox.errors import BuildError, UsageError
from microbox.images import builtin, commit, filestore, importer
from microbox.images.config import ImageConfig
from microbox.sdk.context import Context
from microbox.spec import BoxSpec
from microbox.store.images import Image

FS_STEPS = ("RUN", "COPY", "ADD", "WORKDIR")


class StepFailed(BuildError):
    """A RUN exited non-zero: `microbox build` exits with the same code."""

    type = "build_step"

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Done:
    """A built stage: the image its chain ends in, its top, its key, its config."""

    stage: Stage
    base: Image
    top: Top
    key: str
    config: ImageConfig


class Build:
    """One run of a build; `run(tag)` returns the image."""

    def __init__(self, ctx: Context, root: Path, *, dockerfile: Path, build_args: dict[str, str],
                 target: str | None, no_cache: bool, net: str, report: Report) -> None:
        self.ctx = ctx
        self.root = root
        self.path = dockerfile.name
        self.net = net
        self.report = report
        self.salt = secrets.token_hex(16) if no_cache else ""
        self.context = BuildContext.open(root, dockerfile)
        try:
            text = dockerfile.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {dockerfile}: {exc}",
                             "microbox build -f PATH CONTEXT") from None
        self.plan: Plan = parse(text, build_args=build_args, target=target, path=self.path)
        self.done: dict[int, Done] = {}
        self.number = 0

    def run(self, tag: str | None) -> Image:
        for warning in self.plan.warnings:
            self.report.step(warning)
        for stage in list(self.plan.stages):
            self._stage(stage.index)
        last = self.done[self.plan.target.index]
        name = importer.valid_name(tag) if tag else f"build-{last.key[:12]}"
        source = f"build {self.root}"
        t0 = self._begin("exporting to image")
        if last.top.layer is None:  # nothing changed files: the base's file, a new config
            image = filestore.add(self.ctx.db, name, None, source, digest=last.base.digest,
                                  config=last.config)
        else:
            image = commit.store(self.ctx.db, name, last.top.path, "qcow2",
                                 digest=f"sha256-{last.top.layer}", config=last.config,
                                 source=source, progress=self.report)
        self._end(f"naming to {image.name}", t0)
        return image

    # -- stages ----------------------------------------------------------------

    def _stage(self, index: int) -> None:
        stage = self.plan.stage(index)
        # numbered as BuildKit does: FROM and the steps that change files
        label = stage.label
        total = 1 + sum(ins.keyword in FS_STEPS for ins in stage.instructions)
        t0 = self._begin(f"[{label} 1/{total}] {stage.original or 'FROM ' + stage.base}")
        if stage.base_stage is not None:
            parent = self.done[stage.base_stage]
            base, top, key = parent.base, parent.top, parent.key
        else:
            base = self._base(stage)
            if stage.base != "scratch":
                self.plan = self.plan.with_base_config(index, base.config)
                stage = self.plan.stage(index)
            top, key = Top(base.digest), cache.key(self.salt, base.digest)
        self._end(base.name, t0)
        box = BuildBox(self.ctx, BoxSpec(image=base.name, net=self.net), top)
        try:
            n = 1
            for ins in stage.instructions:
                key = cache.key(key, ins.cache_key, *self._reads(ins))
                if ins.keyword not in FS_STEPS:
                    continue
                n += 1
                head = f"[{label} {n}/{total}] {ins.original}"
                hit = cache.find(key, base.digest)
                if hit is not None:
                    if hit != box.top:
                        box.close()
                        box = BuildBox(self.ctx, BoxSpec(image=base.name, net=self.net), hit)
                    self._begin(f"{head} CACHED")
                    continue
                t0 = self._begin(head)
                self._step(ins, box)
                box.cut(key)
                self._end("DONE", t0)
            top = box.top
        finally:
            box.close()
        self.done[index] = Done(stage, base, top, key, stage.config)

    def _base(self, stage: Stage) -> Image:
        if stage.base == "scratch":
            return self._scratch()
        return builtin.ensure(self.ctx.db, stage.base, progress=self.report)

    def _scratch(self) -> Image:
        """An empty image for FROM scratch (made once per data dir)."""
        found = filestore.find(self.ctx.db, "scratch")
        if found is not None:
            return found
        empty = io.BytesIO(b"\0" * 1024)  # a tar archive of nothing: two zero blocks
        return importer.import_rootfs(self.ctx.db, empty, "scratch")

    # -- steps -----------------------------------------------------------------

    def _reads(self, ins: Instruction) -> list[str]:
        """What a COPY or ADD reads, for its key: the context files' hash, or the
        --from stage's key (an image's digest)."""
        if ins.keyword not in ("COPY", "ADD") or (not ins.sources and ins.heredocs):
            return []
        if ins.from_stage is not None:
            return [self.done[ins.from_stage].key]
        if ins.from_image is not None:
            return [self._image(ins.from_image).digest]
        return [self.context.hash_sources(ins.sources, line=ins.line, keyword=ins.keyword)]

    def _step(self, ins: Instruction, box: BuildBox) -> None:
        if ins.keyword == "RUN":
            self._run(ins, box)
        elif ins.keyword == "WORKDIR":
            files.make_dir(box, ins.workdir)
        else:
            files.copy(ins, box, self.context, self._origin(ins), self.path)

    def _origin(self, ins: Instruction) -> files.Origin | None:
        """For COPY --from: how to start a box over that stage's or image's disk."""
        if ins.from_stage is not None:
            done = self.done[ins.from_stage]
            spec, top = BoxSpec(image=done.base.name, net="none"), done.top
        elif ins.from_image is not None:
            image = self._image(ins.from_image)
            spec, top = BoxSpec(image=image.name, net="none"), Top(image.digest)
        else:
            return None
        return lambda: BuildBox(self.ctx, spec, top)

    def _image(self, ref: str) -> Image:
        """An image a COPY --from reads (pulled or built if missing)."""
        return builtin.ensure(self.ctx.db, ref, progress=self.report)

    def _run(self, ins: Instruction, box: BuildBox) -> None:
        if ins.network == "none" and self.net != "none":
            self.report.step(f"#{self.number} RUN --network=none runs with the build's "
                             f"network ({self.net}); build with --net none to cut it off")
        if ins.script is not None:
            box.put_file(ins.command[0], ins.script.encode(), 0o755)
        prefix = f"#{self.number} ".encode()
        pending = bytearray()

        def out(data: bytes) -> None:
            pending.extend(data)
            *lines, rest = bytes(pending).split(b"\n")
            pending[:] = rest
            for line in lines:
                self.report.output(prefix + line + b"\n")

        code = box.run(ins.command, env=ins.env, cwd=ins.workdir, user=ins.user or None,
                       output=out)
        if pending:
            self.report.output(prefix + bytes(pending) + b"\n")
        if code != 0:
            raise StepFailed(f"{self.path}:{ins.line}: {ins.original} exited with code {code}",
                             code)

    # -- progress --------------------------------------------------------------

    def _begin(self, text: str) -> float:
        self.number += 1
        self.report.step(f"#{self.number} {text}")
        return time.monotonic()

    def _end(self, text: str, t0: float) -> None:
        self.report.step(f"#{self.number} {text} {time.monotonic() - t0:.1f}s")

