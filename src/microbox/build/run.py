"""The entry of a Dockerfile build (rt.images.build): the inputs checked
before anything is made, then the build under the store's shared lock, so
that no `image rm` or `prune` takes a file the build reads."""

from __future__ import annotations

from pathlib import Path

from microbox.build.builder import Build
from microbox.build.report import report_of
from microbox.errors import UsageError
from microbox.images import filestore, importer
from microbox.images.progress import Progress
from microbox.net import plan
from microbox.sdk.context import Context
from microbox.store.images import Image


def build(ctx: Context, path: Path, *, tag: str | None, dockerfile: str | Path | None,
          build_args: dict[str, str], target: str | None, no_cache: bool, net: str,
          progress: Progress) -> Image:
    if tag is not None:
        importer.valid_name(tag)
    if net not in plan.MODES:
        raise UsageError(f"unknown network mode {net!r}; use one of {', '.join(plan.MODES)}")
    root = path.absolute()
    if not root.is_dir():
        raise UsageError(f"the build context {path} is not a directory",
                         "microbox build -t NAME DIR")
    file = Path(dockerfile) if dockerfile is not None else root / "Dockerfile"
    if not file.is_file():
        raise UsageError(f"there is no Dockerfile at {file}", "microbox build -f PATH DIR")
    with filestore.using():
        job = Build(ctx, root, dockerfile=file, build_args=build_args, target=target,
                    no_cache=no_cache, net=net, report=report_of(progress))
        return job.run(tag)
