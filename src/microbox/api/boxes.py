"""Box lifecycle and image routes: each is one or two SDK calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from microbox import mounts as box_mounts
from microbox import portmap
from microbox.api.guard import Invalid
from microbox.api.models import CreateBox, Deleted, Envelope, ImageInfo, SetBox
from microbox.envelope import envelope
from microbox.errors import UsageError
from microbox.net import cacerts
from microbox.sdk import STATUSES
from microbox.sdk.aio import AsyncBox, AsyncRuntime
from microbox.sdk.records import BoxInfo
from microbox.spec import BoxSpec
from microbox.store.images import Image

router = APIRouter()


async def runtime_of(request: Request) -> AsyncRuntime:
    runtime: AsyncRuntime = request.app.state.runtime
    return runtime


RT = Annotated[AsyncRuntime, Depends(runtime_of)]
Timeout = Annotated[float, Query(gt=0, le=3600, description="Seconds to wait for a graceful "
                                 "stop before SIGTERM, then SIGKILL.")]


def image_info(img: Image) -> dict[str, Any]:
    """An image as the API shows it (models.ImageInfo)."""
    return {"name": img.name, "digest": img.digest, "size": img.size, "source": img.source}


def _ok(command: str, data: Any) -> dict[str, Any]:
    return envelope(command, 0, data)


@router.get("/boxes", name="list", tags=["boxes"], response_model=Envelope[list[BoxInfo]],
            summary="List boxes: running, paused and crashed ones unless all or status.")
async def list_boxes(rt: RT, all: bool = False, status: str | None = None,
               label: Annotated[list[str], Query(description="KEY or KEY=VALUE; repeat "
                                                 "to require several.")] = []  # noqa: B006
               ) -> dict[str, Any]:
    if status is not None and status not in STATUSES:
        raise Invalid(f"bad status {status!r}; use one of {', '.join(STATUSES)}")
    labels: dict[str, str | None] = {}
    for item in label:
        key, sep, value = item.partition("=")
        labels[key] = value if sep else None
    found = await rt.boxes.list(all=all, status=status, labels=labels)
    return _ok("list", [(await b.info()).to_json() for b in found])


def _pem_only(certs: list[str]) -> tuple[str, ...]:
    """ca_certs are PEM text: a request names no file of the server's."""
    for c in certs:
        if not cacerts.is_pem(c):
            raise UsageError("ca_certs entries are the PEM text of certificates "
                             "(-----BEGIN CERTIFICATE-----), not file names")
    return tuple(certs)


@router.post("/boxes", name="create", tags=["boxes"], status_code=201,
             response_model=Envelope[BoxInfo],
             summary="Create a box; with start (the default) boot it, detached from the server.")
async def create(body: CreateBox, rt: RT) -> dict[str, Any]:
    spec = BoxSpec(image=body.image, cpus=body.cpus, memory_mib=body.memory_mib, env=body.env,
                   workdir=body.workdir, user=body.user, accel=body.accel, labels=body.labels,
                   cold=body.cold, net=body.net, allow_hosts=tuple(body.allow_hosts),
                   allow_cidrs=tuple(body.allow_cidrs), deny_all=body.deny_all,
                   allow_private=body.allow_private, add_hosts=tuple(body.add_hosts),
                   ports=portmap.parse_all(body.ports),
                   mounts=box_mounts.parse_all(body.mounts), ca_certs=_pem_only(body.ca_certs),
                   trust_host_ca=cacerts.trust_host_default() if body.trust_host_ca is None
                   else body.trust_host_ca)
    if not body.start:
        if body.rm or body.command:
            raise UsageError("rm and command need a started box; send start: true")
        made = await rt.boxes.create(spec=spec, name=body.name)
        return _ok("create", (await made.info()).to_json())
    # As `microbox run -d`: the image's Entrypoint and Cmd, `command` replacing the Cmd,
    # run as the box's main process; the box outlives this request and the server.
    box = await rt.boxes.run(spec=spec, command=body.command or (), name=body.name,
                             rm=body.rm, detach=True)
    return _ok("create", (await box.info()).to_json())


@router.get("/boxes/{ref}", name="inspect", tags=["boxes"], response_model=Envelope[BoxInfo],
            summary="Everything known about a box (by name, id or unique id prefix).")
async def inspect(ref: str, rt: RT) -> dict[str, Any]:
    return _ok("inspect", (await (await rt.boxes.get(ref)).info()).to_json())


async def _action(ref: str, rt: AsyncRuntime, command: str,
                  act: Callable[[AsyncBox], Awaitable[object]]) -> dict[str, Any]:
    box = await rt.boxes.shared(ref)
    await act(box)
    return _ok(command, (await box.info()).to_json())


@router.post("/boxes/{ref}/start", name="start", tags=["boxes"],
             response_model=Envelope[BoxInfo], summary="Boot a stopped or crashed box.")
async def start(ref: str, rt: RT) -> dict[str, Any]:
    return await _action(ref, rt, "start", AsyncBox.start)


@router.post("/boxes/{ref}/stop", name="stop", tags=["boxes"], response_model=Envelope[BoxInfo],
             summary="Stop a box: the guest syncs its disk and powers off.")
async def stop(ref: str, rt: RT, timeout: Timeout = 10.0) -> dict[str, Any]:
    return await _action(ref, rt, "stop", lambda b: b.stop(timeout))


@router.post("/boxes/{ref}/restart", name="restart", tags=["boxes"],
             response_model=Envelope[BoxInfo], summary="Stop a box, then start it again.")
async def restart(ref: str, rt: RT, timeout: Timeout = 10.0) -> dict[str, Any]:
    return await _action(ref, rt, "restart", lambda b: b.restart(timeout))


@router.post("/boxes/{ref}/pause", name="pause", tags=["boxes"],
             response_model=Envelope[BoxInfo], summary="Freeze a running box's vCPUs.")
async def pause(ref: str, rt: RT) -> dict[str, Any]:
    return await _action(ref, rt, "pause", AsyncBox.pause)


@router.post("/boxes/{ref}/resume", name="resume", tags=["boxes"],
             response_model=Envelope[BoxInfo], summary="Thaw a paused box.")
async def resume(ref: str, rt: RT) -> dict[str, Any]:
    return await _action(ref, rt, "resume", AsyncBox.resume)


@router.patch("/boxes/{ref}", name="set", tags=["boxes"], response_model=Envelope[BoxInfo],
              summary="Change a stopped box's CPUs, memory or network (applied at its next "
                      "start).")
async def set_(ref: str, body: SetBox, rt: RT) -> dict[str, Any]:
    given = body.model_dump(exclude={"reset_policy"}, exclude_none=True)
    if not given and not body.reset_policy:
        raise Invalid("give at least one field to change")
    return await _action(ref, rt, "set", lambda b: b.set(
        cpus=body.cpus, memory_mib=body.memory_mib, reset_policy=body.reset_policy,
        net=body.net, allow_hosts=body.allow_hosts, allow_cidrs=body.allow_cidrs,
        deny_all=body.deny_all, allow_private=body.allow_private, add_hosts=body.add_hosts))


@router.delete("/boxes/{ref}", name="delete", tags=["boxes"], response_model=Envelope[Deleted],
               summary="Delete a box; a running one needs force (it is killed).")
async def delete(ref: str, rt: RT, force: bool = False) -> dict[str, Any]:
    box = await rt.boxes.shared(ref)
    await box.delete(force)
    return _ok("delete", {"deleted": box.id})


@router.get("/images", name="image list", tags=["images"],
            response_model=Envelope[list[ImageInfo]], summary="Images in the store.")
async def images(rt: RT) -> dict[str, Any]:
    return _ok("image list", [image_info(i) for i in await rt.images.list()])


@router.post("/images/{name}/build", name="image build", tags=["images"],
             response_model=Envelope[ImageInfo],
             summary="Build a built-in image (kept if present, unless force).")
async def build_image(name: str, rt: RT, force: bool = False) -> dict[str, Any]:
    img = await rt.images.build_builtin(name, force=force)
    return _ok("image build", image_info(img))
