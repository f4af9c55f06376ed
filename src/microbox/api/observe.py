"""What boxes cost and what happened to them: `GET /boxes/{ref}/stats`,
`GET /events` (NDJSON) and `GET /metrics` (Prometheus text, through the
official client: a Collector made for each scrape yields the figures the
scrape itself read)."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from microbox.api.boxes import RT
from microbox.api.models import Envelope
from microbox.envelope import envelope
from microbox.sdk import parse_filters, parse_time
from microbox.sdk.stats import BoxStats

router = APIRouter(tags=["observe"])


@router.get("/boxes/{ref}/stats", name="stats", response_model=Envelope[dict[str, Any]],
            summary="What the box costs now (`microbox stats --no-stream BOX`); CPU % over "
                    "`interval` s.")
async def stats(ref: str, rt: RT,
                interval: Annotated[float, Query(ge=0, le=10)] = 0.5) -> dict[str, Any]:
    box = await rt.boxes.get(ref)
    return envelope("stats", 0, (await box.stats(interval)).to_json())


@router.get("/events", name="events", response_class=StreamingResponse,
            summary="The event log as NDJSON, one event a line (`microbox events --json`); "
                    "with follow, new events as they happen until the client hangs up.",
            responses={200: {"content": {"application/x-ndjson": {}}}})
async def events(rt: RT, since: str | None = None, until: str | None = None,
                 filter: Annotated[list[str] | None, Query()] = None,
                 follow: bool = False) -> StreamingResponse:
    wanted = parse_filters(filter or [])
    start = parse_time(since) if since else None
    end = parse_time(until) if until else None
    stop = threading.Event()  # set when the client goes away: the follow ends

    async def lines() -> AsyncIterator[bytes]:
        async for e in rt.events(since=start, until=end, filters=wanted, follow=follow,
                                 stop=stop):
            yield json.dumps(e.to_json()).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


# name, help, kind, the BoxStats field
BOX_METRICS = (
    ("microbox_box_cpu_seconds", "CPU time of the box's VMM (user + system)", "counter",
     "cpu_seconds"),
    ("microbox_box_memory_used_bytes", "Memory the guest uses (MemTotal - MemAvailable)",
     "gauge", "memory_used"),
    ("microbox_box_memory_total_bytes", "Memory the guest kernel has", "gauge",
     "memory_total"),
    ("microbox_box_host_pss_bytes", "The VMM's proportional share of host memory", "gauge",
     "host_pss"),
    ("microbox_box_network_receive_bytes", "Bytes the box received through its egress proxy",
     "counter", "net_rx"),
    ("microbox_box_network_transmit_bytes", "Bytes the box sent through its egress proxy",
     "counter", "net_tx"),
    ("microbox_box_network_connections", "Connections the box's egress proxy served",
     "counter", "net_connections"),
    ("microbox_box_network_refused", "Connections the box's network policy refused",
     "counter", "net_refused"),
    ("microbox_box_disk_used_bytes", "Bytes allocated to the box's disk overlay", "gauge",
     "disk_used"),
    ("microbox_box_tasks", "Tasks in the guest (processes and threads)", "gauge", "pids"),
)
LABELS = ["box_id", "name", "image"]


class Scrape:
    """A prometheus_client Collector over the figures one scrape read."""

    def __init__(self, readings: list[BoxStats], statuses: dict[str, int],
                 pools: list[dict[str, Any]]) -> None:
        self.readings, self.statuses, self.pools = readings, statuses, pools

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for name, text, kind, field in BOX_METRICS:
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                name, text, labels=LABELS)
            for s in self.readings:
                value = getattr(s, field)
                if value is not None:
                    family.add_metric([s.id, s.name, s.image], float(value))
            yield family
        boxes = GaugeMetricFamily("microbox_boxes", "Boxes by status (not pools' spares)",
                                  labels=["status"])
        for status, n in sorted(self.statuses.items()):
            boxes.add_metric([status], n)
        yield boxes
        ready = GaugeMetricFamily("microbox_pool_ready", "Boxes a pool has ready to take",
                                  labels=["pool", "image"])
        size = GaugeMetricFamily("microbox_pool_size", "Boxes a pool keeps", labels=["pool",
                                                                                     "image"])
        for p in self.pools:
            ready.add_metric([p["id"], p["image"]], p["ready"])
            size.add_metric([p["id"], p["image"]], p["size"])
        yield ready
        yield size

    def describe(self) -> list[Any]:
        return []  # figures only at scrape time: nothing to check at registration


@router.get("/metrics", name="metrics", response_class=Response,
            summary="Prometheus metrics: each running box's costs (labelled by box id, name "
                    "and image), boxes by status, pools' ready counts.",
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(rt: RT) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    readings: list[BoxStats] = []
    async for got in rt.boxes.watch_stats(interval=0, stream=False):
        readings = got
    statuses: dict[str, int] = {}
    for b in await rt.boxes.list(all=True):
        statuses[b.status] = statuses.get(b.status, 0) + 1
    pools = [p.to_json() for p in await rt.pools.list()]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Scrape(readings, statuses, pools))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
