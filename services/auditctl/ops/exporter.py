"""The dead-letter exporter: dead-letter depth as Prometheus gauges, to alert on.

Run as ``auditctl dlq exporter`` (a Deployment of its own in the Helm chart and compose file). Every
interval it reads what was added to the dead-letter topic and to the requeue markers since the last scan
(headers only matter; the topic is small by design) and forgets what retention removed.

Metrics:

- ``audit_deadletter_messages{stage,source_topic}``: dead letters retained in the topic.
- ``audit_deadletter_unrequeued_messages{stage,source_topic}``: of those, not requeued yet: alert on > 0.
- ``audit_deadletter_oldest_unrequeued_age_seconds``: how long the oldest unrequeued one has waited.
- ``audit_deadletter_end_offset{partition}``: dead letters ever written; ``rate()`` gives new ones per second.
- ``audit_deadletter_last_scan_timestamp_seconds`` and ``audit_deadletter_scan_errors_total``.

``/healthz`` answers while the process runs; ``/readyz`` once a scan succeeded within three intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from services.auditctl.ops.deadletter import DeadLetter, DeadLetterRef, RequeueMarker
from services.auditctl.ops.reader import TopicSource

log = logging.getLogger("dlq-exporter")


@dataclass(frozen=True)
class _Entry:
    stage: str
    source_topic: str
    failed_at: float


class DeadLetterIndex:
    """What the dead-letter and marker topics hold, kept up to date incrementally."""

    def __init__(self, reader: TopicSource, dead_letter_topic: str, marker_topic: str) -> None:
        self._reader = reader
        self._dead_letter_topic = dead_letter_topic
        self._marker_topic = marker_topic
        self._next: dict[tuple[str, int], int] = {}
        self.entries: dict[DeadLetterRef, _Entry] = {}
        self.requeued: set[DeadLetterRef] = set()
        self.end_offsets: dict[int, int] = {}

    async def refresh(self) -> None:
        bounds = await self._reader.bounds(self._dead_letter_topic,
                                           await self._reader.partitions(self._dead_letter_topic))
        for partition, (begin, end) in bounds.items():
            self.end_offsets[partition] = end
            gone = [ref for ref in self.entries if ref.partition == partition and ref.offset < begin]
            for ref in gone:  # removed by retention
                del self.entries[ref]
                self.requeued.discard(ref)
            start = max(begin, self._next.get((self._dead_letter_topic, partition), begin))
            async for record in self._reader.read_range(self._dead_letter_topic, partition, start, end):
                letter = DeadLetter.from_record(record)
                failed_at = letter.failed_at.timestamp() if letter.failed_at else record.timestamp_ms / 1000
                self.entries[letter.ref] = _Entry(letter.stage, letter.source_topic or "unknown", failed_at)
            self._next[(self._dead_letter_topic, partition)] = end
        try:
            marker_partitions = await self._reader.partitions(self._marker_topic)
        except LookupError:
            return  # nothing requeued yet
        for partition, (begin, end) in (await self._reader.bounds(self._marker_topic, marker_partitions)).items():
            start = max(begin, self._next.get((self._marker_topic, partition), begin))
            async for record in self._reader.read_range(self._marker_topic, partition, start, end):
                marker = RequeueMarker.from_record(record)
                if marker is not None:
                    self.requeued.add(marker.ref)
            self._next[(self._marker_topic, partition)] = end


class DeadLetterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Gauge("audit_deadletter_messages", "Dead letters retained in the dead-letter topic.",
                              ["stage", "source_topic"], registry=registry)
        self.unrequeued = Gauge("audit_deadletter_unrequeued_messages",
                                "Retained dead letters not requeued yet; alert when above zero.",
                                ["stage", "source_topic"], registry=registry)
        self.oldest_age = Gauge("audit_deadletter_oldest_unrequeued_age_seconds",
                                "Age of the oldest dead letter not requeued yet (0 when there is none).",
                                registry=registry)
        self.end_offset = Gauge("audit_deadletter_end_offset", "Dead letters ever written, per partition.",
                                ["partition"], registry=registry)
        self.last_scan = Gauge("audit_deadletter_last_scan_timestamp_seconds",
                               "When the dead-letter topic was last read successfully.", registry=registry)
        self.scan_errors = Counter("audit_deadletter_scan_errors", "Scans of the dead-letter topic that failed.",
                                   registry=registry)

    def publish(self, index: DeadLetterIndex, now: float) -> None:
        self.messages.clear()
        self.unrequeued.clear()
        counts: dict[tuple[str, str], int] = {}
        pending: dict[tuple[str, str], int] = {}
        oldest: float | None = None
        for ref, entry in index.entries.items():
            labels = (entry.stage, entry.source_topic)
            counts[labels] = counts.get(labels, 0) + 1
            pending.setdefault(labels, 0)
            if ref not in index.requeued:
                pending[labels] += 1
                oldest = entry.failed_at if oldest is None else min(oldest, entry.failed_at)
        for labels, n in counts.items():
            self.messages.labels(*labels).set(n)
            self.unrequeued.labels(*labels).set(pending[labels])
        self.oldest_age.set(0 if oldest is None else max(0.0, now - oldest))
        for partition, end in index.end_offsets.items():
            self.end_offset.labels(str(partition)).set(end)
        self.last_scan.set(now)


class DeadLetterExporter:
    def __init__(self, index: DeadLetterIndex, metrics: DeadLetterMetrics, registry: CollectorRegistry,
                 interval: float, clock: Callable[[], float] = time.time) -> None:
        self.index = index
        self.metrics = metrics
        self.registry = registry
        self.interval = interval
        self._clock = clock
        self.last_success: float | None = None

    async def scan_once(self) -> bool:
        try:
            await self.index.refresh()
        except (KafkaError, OSError, TimeoutError, LookupError) as exc:
            self.metrics.scan_errors.inc()
            log.warning("dead-letter scan failed", extra={"error": repr(exc)})
            return False
        now = self._clock()
        self.metrics.publish(self.index, now)
        self.last_success = now
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.scan_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    @property
    def ready(self) -> bool:
        return self.last_success is not None and self._clock() - self.last_success <= 3 * self.interval

    def app(self) -> Starlette:
        async def metrics(_: Request) -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        async def healthz(_: Request) -> Response:
            return PlainTextResponse("ok")

        async def readyz(_: Request) -> Response:
            return PlainTextResponse("ready" if self.ready else "no recent scan", 200 if self.ready else 503)

        return Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz), Route("/readyz", readyz)])
