"""Snapshot and fork routes: each is one SDK call."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from microbox.api.boxes import RT
from microbox.api.models import (
    Deleted,
    Envelope,
    ForkBody,
    NewSnapshot,
    RestoreBody,
    SnapshotInfo,
)
from microbox.envelope import envelope
from microbox.sdk.records import BoxInfo

router = APIRouter(tags=["snapshots"])


@router.post("/boxes/{ref}/snapshots", name="snapshot create", status_code=201,
             response_model=Envelope[SnapshotInfo],
             summary="Snapshot a running or paused box (memory, devices, disk); it runs on.")
async def create(ref: str, body: NewSnapshot, rt: RT) -> dict[str, Any]:
    box = await rt.boxes.shared(ref)
    return envelope("snapshot create", 0, (await box.snapshot(body.name)).to_json())


@router.post("/boxes/{ref}/fork", name="fork", status_code=201,
             response_model=Envelope[list[BoxInfo]],
             summary="Running clones of a running box, each its own machine.")
async def fork(ref: str, body: ForkBody, rt: RT) -> dict[str, Any]:
    box = await rt.boxes.shared(ref)
    clones = await box.fork(body.count, name_prefix=body.name_prefix)
    return envelope("fork", 0, [(await c.info()).to_json() for c in clones])


@router.get("/snapshots", name="snapshot ls", response_model=Envelope[list[SnapshotInfo]],
            summary="List snapshots.")
async def list_(rt: RT) -> dict[str, Any]:
    return envelope("snapshot ls", 0, [s.to_json() for s in await rt.snapshots.list()])


@router.get("/snapshots/{ref}", name="snapshot inspect", response_model=Envelope[SnapshotInfo],
            summary="One snapshot, by name, id or unique id prefix.")
async def inspect(ref: str, rt: RT) -> dict[str, Any]:
    return envelope("snapshot inspect", 0, (await rt.snapshots.get(ref)).to_json())


@router.post("/snapshots/{ref}/restore", name="snapshot restore", status_code=201,
             response_model=Envelope[BoxInfo],
             summary="A new running box from a snapshot, from the moment it was taken.")
async def restore(ref: str, body: RestoreBody, rt: RT) -> dict[str, Any]:
    box = await rt.boxes.restore(ref, name=body.name)
    return envelope("snapshot restore", 0, (await box.info()).to_json())


@router.delete("/snapshots/{ref}", name="snapshot rm", response_model=Envelope[Deleted],
               summary="Remove a snapshot; one boxes were restored from needs force.")
async def remove(ref: str, rt: RT, force: bool = False) -> dict[str, Any]:
    snap = await rt.snapshots.get(ref)
    await rt.snapshots.remove(snap.id, force)
    return envelope("snapshot rm", 0, {"deleted": snap.id})
