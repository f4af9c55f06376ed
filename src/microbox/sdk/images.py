"""`rt.images`: the image store, built-in builds, OCI pulls, packs and
warm-start templates (docker-py's `client.images`)."""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from microbox.images.progress import QUIET, Progress
from microbox.net import plan
from microbox.sdk.context import Context
from microbox.spec import DEFAULT_IMAGE, DEFAULT_MEMORY_MIB, BoxSpec, validate_name
from microbox.store import boxes as boxes_store

if TYPE_CHECKING:
    from microbox.images.pack import PackInfo
    from microbox.images.push import Pushed
    from microbox.sdk.box import Box
    from microbox.store.images import Image


class Images:
    """The images of one Runtime's data dir."""

    def __init__(self, ctx: Context) -> None:
        self._rt = ctx

    def list(self) -> builtins.list[Image]:
        from microbox.images import filestore

        return filestore.all_images(self._rt.db)

    def get(self, name: str) -> Image:
        """An image in the store by name (`NAME` also finds `NAME:latest`)."""
        from microbox.images import filestore

        return filestore.get(self._rt.db, name)

    @staticmethod
    def builtin() -> builtins.list[str]:
        """The names `build` makes (and `run` builds when missing)."""
        from microbox.images import builtin

        return builtins.list(builtin.NAMES)

    def build(self, path: str | Path = ".", *, tag: str | None = None,
              dockerfile: str | Path | None = None,
              build_args: dict[str, str] | None = None, target: str | None = None,
              no_cache: bool = False, net: str = plan.DEFAULT_MODE,
              progress: Progress = QUIET) -> Image:
        """Build an image from a Dockerfile (`dockerfile`, default `Dockerfile` in
        the context `path`), as `docker build` does: each RUN in a box, each step
        cached (an unchanged rebuild runs nothing), the result stored as `tag`.
        `progress` hears each step and, if it has an `output` method, what the
        RUN steps print (docs/dockerfile.md)."""
        from microbox.build import run

        return run.build(self._rt, Path(path), tag=tag, dockerfile=dockerfile,
                         build_args=build_args or {}, target=target, no_cache=no_cache,
                         net=net, progress=progress)

    def build_builtin(self, name: str = DEFAULT_IMAGE, *, force: bool = False,
                      include: builtins.list[str] | None = None,
                      progress: Progress = QUIET) -> Image:
        """Build a built-in image, busybox or debian[:SUITE] (kept if already present,
        unless force, or extra packages to include)."""
        from microbox.images import builtin

        return builtin.build(self._rt.db, name, force=force, include=include,
                             progress=progress)

    def pull(self, ref: str, *, insecure: bool = False, progress: Progress = QUIET) -> Image:
        """Pull an OCI image (`[REGISTRY/]NAME[:TAG][@DIGEST]`) into the store."""
        from microbox.images import pull as image_pull

        return image_pull.pull(self._rt.db, ref, insecure=insecure, progress=progress)

    def import_rootfs(self, source: str | Path | IO[bytes], name: str, *,
                      progress: Progress = QUIET) -> Image:
        """A root filesystem from a directory, a tarball (gzip, zstd or plain) or a
        binary stream of one, stored as `name`."""
        from microbox.images import importer

        return importer.import_rootfs(self._rt.db, source, name, progress=progress)

    def remove(self, name: str, *, force: bool = False) -> Image:
        """Remove an image name; refused while a box or a snapshot uses it unless
        force (they keep the disk's backing file: it is unlinked only once nothing
        uses it)."""
        from microbox.images import filestore

        return filestore.remove(self._rt.db, name, force, _snapshot_images())

    def prune(self, *, all: bool = False) -> builtins.list[str]:
        """Remove unnamed image files, unused cached layers, the build cache,
        abandoned work; with all, also every image no box or snapshot uses."""
        from microbox.build import cache
        from microbox.images import filestore

        return filestore.prune(self._rt.db, all, _snapshot_images(), also=cache.prune)

    def users(self, name: str) -> builtins.list[str]:
        """Names of the boxes whose disk is backed by the image `name`."""
        from microbox.images import filestore

        return filestore.boxes_using(self._rt.db, self.get(name).digest)

    def tag(self, source: str, target: str) -> Image:
        from microbox.images import filestore, importer

        return filestore.tag(self._rt.db, source, importer.valid_name(target))

    def push(self, name: str, ref: str, *, insecure: bool = False,
             progress: Progress = QUIET) -> Pushed:
        """Push the image `name` to a registry as `ref` (`REGISTRY/REPO[:TAG]`), as
        one gzip layer and its config (Env, Entrypoint, Cmd, WorkingDir, User,
        Labels, ExposedPorts, StopSignal). The layer is the root file system of a
        throwaway box of the image (booted cold, no network, deleted on every
        path out), with what its boot wrote taken back from the image
        (microbox.images.push). Loopback registries are spoken to over plain
        HTTP, others only with `insecure`; credentials from `login` (or Docker's)."""
        from microbox.images import filestore
        from microbox.images import push as image_push

        target = image_push.target(ref)
        image = filestore.get(self._rt.db, name)
        with filestore.staging() as tmp:
            layout = tmp / "layout"
            with self._throwaway(image, progress) as box:
                progress.step(f"exporting and compressing the root file system of {image.name}")
                written = image_push.build_layout(box.export, image, layout, progress)
            return image_push.upload(image, written, layout, target, tmp, insecure=insecure,
                                     progress=progress)

    @contextlib.contextmanager
    def _throwaway(self, image: Image, progress: Progress) -> Iterator[Box]:
        """A running box of exactly `image` (its digest), booted cold (no template
        made or used) with no network. It is this process's (it dies with it,
        even on SIGKILL) and is deleted on every path out of the block,
        KeyboardInterrupt included."""
        from microbox.core import lifecycle
        from microbox.images import filestore
        from microbox.sdk.box import Box

        progress.step(f"starting a box of {image.name}")
        spec = BoxSpec(image=image.name, net="none", cold=True,
                       labels={"microbox.purpose": "image-push"}).validate()
        with filestore.using():
            record, lock = lifecycle.create(self._rt.db, spec, auto_remove=True,
                                            start_next=True, image_digest=image.digest)
        started = lifecycle.start(self._rt.db, record, lock, attached=True, log=self._rt.log)
        with Box(self._rt, started.record, started=started, remove=True, owned=True) as box:
            yield box

    @staticmethod
    def login(registry: str, username: str, password: str, *, insecure: bool = False) -> None:
        """Check credentials with the registry and keep them (0600) for pulls."""
        from microbox.images import auth, reference, skopeo

        skopeo.login(registry, username, password, auth.prepare_own_file(),
                     plain_http=insecure or reference.is_loopback(registry))

    def warm(self, image: str = DEFAULT_IMAGE, *, cpus: int = 1,
             memory_mib: int = DEFAULT_MEMORY_MIB, accel: str = "auto",
             net: str = plan.DEFAULT_MODE) -> str:
        """Make the warm-start template of boxes of `image` with this shape and
        network mode ahead of their first start (which would make it otherwise);
        returns its key."""
        from microbox.core import warm
        from microbox.images import filestore

        spec = self.resolve(BoxSpec(image=image, cpus=cpus, memory_mib=memory_mib,
                                    accel=accel, net=net), QUIET)
        found = filestore.get(self._rt.db, spec.image)
        with filestore.using():
            return warm.warm_image(spec, found.path, found.digest, self._rt.log).path.name

    def resolve(self, spec: BoxSpec, progress: Progress = QUIET) -> BoxSpec:
        """Make sure the spec's image exists (built-in ones are built, registry
        references pulled), then fill the spec's defaults from its config (Env,
        WorkingDir, User)."""
        from microbox.images import builtin
        from microbox.images import config as image_config

        image = builtin.ensure(self._rt.db, spec.validate().image, progress=progress)
        return image_config.apply(image.config, replace(spec, image=image.name))

    # -- packs -----------------------------------------------------------------

    def pack(self, name: str, path: str | Path, *, progress: Progress = QUIET) -> PackInfo:
        """Write the image `name` (built or pulled if missing, as `run` does) to
        the pack file `path`: its disk, its config, a default box spec."""
        from microbox.images import builtin, filestore
        from microbox.images import pack as packs

        image = builtin.ensure(self._rt.db, name, progress=progress)
        with filestore.using():  # `image rm` cannot take the file while it is read
            return packs.write(Path(path), image.path, disk_format="raw", kind="image",
                               source={"image": image.name, "digest": image.digest},
                               config=image.config, spec=BoxSpec(image=image.name),
                               progress=progress)

    @staticmethod
    def inspect_pack(path: str | Path, *, progress: Progress = QUIET) -> PackInfo:
        """Check a pack whole (every checksum) and read its manifest; writes nothing."""
        from microbox.images import pack as packs

        return packs.verify(Path(path), progress)

    def import_pack(self, path: str | Path, *, box_name: str | None = None,
                    progress: Progress = QUIET,
                    overrides: dict[str, Any] | None = None) -> BoxSpec:
        """Verify the pack (nothing is written unless all of it checks out), put its
        disk in the store as an image (content-addressed) and return the spec of a
        box of it: the pack's, with `overrides` (BoxSpec fields; env and labels add
        to the pack's). The spec and `box_name` are checked before the store is
        touched."""
        from microbox.images import config as image_config
        from microbox.images import pack as packs

        info = packs.verify(Path(path), progress)
        spec = packs.merge(info.spec(info.image_name), overrides or {}).validate()
        if box_name is not None:
            boxes_store.check_name_free(self._rt.db.conn, validate_name(box_name))
        self._pack_requires(info)
        packs.import_verified(self._rt.db, info, progress)
        return image_config.apply(info.config, spec)

    def _pack_requires(self, info: PackInfo) -> None:
        from microbox.images import pack as packs

        made = (info.manifest.get("requires") or {})
        here = packs.requires(BoxSpec(image=info.image_name))
        for what in ("kernel", "agent"):
            theirs = (made.get(what) or {}).get("cache_key")
            ours = here[what].get("cache_key")
            if theirs and ours and theirs != ours:
                self._rt.log(f"the pack was made with {what} {theirs}; this host boots {ours}")


def _snapshot_images() -> dict[str, builtins.list[str]]:
    """The image files snapshots need, by digest: the names of those snapshots."""
    from microbox.core import snapshots

    needed: dict[str, builtins.list[str]] = {}
    for snap in snapshots.all_snapshots():
        needed.setdefault(snap.image_digest, []).append(snap.name)
    return needed

