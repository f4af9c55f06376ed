"""Pool routes: boxes kept ready for a run to take; each is one SDK call."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from microbox.api.boxes import RT
from microbox.api.models import Deleted, Envelope, NewPool, PoolInfo
from microbox.envelope import envelope

router = APIRouter(tags=["pools"])


@router.post("/pools", name="pool add", status_code=201, response_model=Envelope[PoolInfo],
             summary="Keep boxes of a shape ready (a pool of that shape gets the new size); "
                     "answers once they are.")
async def add(body: NewPool, rt: RT) -> dict[str, Any]:
    pool = await rt.pools.add(body.image, size=body.size, cpus=body.cpus,
                             memory_mib=body.memory_mib, accel=body.accel, net=body.net)
    return envelope("pool add", 0, pool.to_json())


@router.get("/pools", name="pool ls", response_model=Envelope[list[PoolInfo]],
            summary="List pools and how many of their boxes are ready.")
async def list_(rt: RT) -> dict[str, Any]:
    return envelope("pool ls", 0, [p.to_json() for p in await rt.pools.list()])


@router.get("/pools/{ref}", name="pool inspect", response_model=Envelope[PoolInfo],
            summary="One pool, by id, id prefix or its image's name.")
async def inspect(ref: str, rt: RT) -> dict[str, Any]:
    return envelope("pool inspect", 0, (await rt.pools.get(ref)).to_json())


@router.delete("/pools/{ref}", name="pool rm", response_model=Envelope[Deleted],
               summary="Remove a pool and the boxes it keeps ready (not those runs took).")
async def remove(ref: str, rt: RT) -> dict[str, Any]:
    return envelope("pool rm", 0, {"deleted": (await rt.pools.remove(ref)).id})
