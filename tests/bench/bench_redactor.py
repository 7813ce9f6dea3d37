"""Redactor benchmark: canonical events per second for ONE redactor process, and the PII engine beside Presidio.

Usage: python -m tests.bench.bench_redactor [--batches 300] [--presidio-events 300] [--json out.json]
(``make bench-redactor``)

Payloads: Claude Code-shaped protobuf batches of 50 records built from the real captures (the resource,
scope, event mix and attributes of CLI 2.1.332), every content field replaced by ~1 KiB of realistic text
with PII sprinkled in (shared/pii/eval/workload.py): prompts, Bash commands, JSON tool input and
API errors, padded with prose, log lines and code. Events without content (api_request, housekeeping)
stay in the mix as the CLI sends them.

Measurements:
1. engine only: every string the transform hands the engine for those events (content fields, JSON ones
   through the JSON path, and the other string attributes), our engine (person names on: gazetteer and
   en_core_web_sm) and Presidio's analyzer with the same trained spaCy pipeline on the same strings ->
   events/s and the ratio, over one pass after a warm-up on the first 50 events (the engine remembers
   texts it found clean, so a second pass would time that memory);
2. transform only, in this process: decode, map, redact, encode (no broker) -> events/s, to show what the
   engine costs inside the stage;
3. the full stage: a fresh in-memory broker and a fresh embedded PostgreSQL (for postures), raw batches
   preloaded onto the raw topic with the receiver's headers, then the real redactor process started
   (``python -m services.redactor``); canonical events per second counted from the first canonical
   message to the last (their broker timestamps, set when the redactor produced them), the redactor's
   CPU time per event and its peak resident memory (RSS), with person names on (PII_NER_MODEL set).
Targets: >= 2,000 canonical events/s for the process with RSS <= 600 MB, and the engine >= 10x Presidio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from deploy.local.infra import start_broker, start_postgres
from shared import otlp
from shared.canonicalize.mapping import attributes_of, map_record
from shared.canonicalize.transform import JSON_CONTENT_FIELDS, TransformPolicy, TransformStats, transform_batch
from shared.db.migrate import apply_migrations
from shared.db.pool import connect
from shared.kafka import TopicSpec, ensure_topics, make_producer, tenant_key
from shared.messages import raw_batch
from shared.messages.auth import MessageKey, load_signing_key, provision_local_keys
from shared.messages.raw_batch import RawBatch
from shared.pii import build_engine
from shared.pii.eval.workload import ATTRIBUTE_OF_EVENT, Workload
from shared.pii.recognizers.person import DEFAULT_NER_MODEL
from tests.bench.payloads import captured_shapes, set_string_attribute
from tests.bench.report import publish

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FIXTURES = Path(os.environ.get("AUDIT_FIXTURES_DIR", ROOT.parent / "shared" / "fixtures" / "claude-code-2.1.332"))
TARGET_EVENTS_PER_SECOND = 2_000
TARGET_RSS_MB = 600
TARGET_RATIO_TO_PRESIDIO = 10
RECORDS_PER_BATCH = 50
CONTENT_CHARS = 1024
TENANT = "t-bench"
POLICY = TransformPolicy(
    plane_by_service={"claude-code": "claude_code"},
    default_plane="claude_code",
    keep_other_events=True,
    keep_unknown_attributes=True,
)


# Payloads ---------------------------------------------------------------------------------------------------


def _event_name(record: LogRecord) -> str:
    return next((a.value.string_value for a in record.attributes if a.key == "event.name"), "")


def build_realistic_batches(
    fixtures_dir: Path, *, count: int, seed: int = 7, content_chars: int = CONTENT_CHARS
) -> list[bytes]:
    """``count`` protobuf bodies of 50 records in the captured session order, each content field of about
    ``content_chars`` characters from the workload (the events without content stay as captured)."""
    template, shapes = captured_shapes(fixtures_dir)
    source_rl = template.resource_logs[0]
    workload = Workload(seed)
    bodies = []
    cursor = 0
    for index in range(count):
        request = otlp.ExportLogsServiceRequest()
        rl = request.resource_logs.add()
        rl.resource.CopyFrom(source_rl.resource)
        sl = rl.scope_logs.add()
        sl.scope.CopyFrom(source_rl.scope_logs[0].scope)
        session = str(uuid.UUID(int=index + 1))
        for position in range(RECORDS_PER_BATCH):
            record = sl.log_records.add()
            record.CopyFrom(shapes[cursor % len(shapes)])
            cursor += 1
            set_string_attribute(record, "session.id", session)
            for attribute in record.attributes:
                if attribute.key == "event.sequence":
                    attribute.value.int_value = position
        for record in sl.log_records:
            if _event_name(record) not in ATTRIBUTE_OF_EVENT:
                continue
            field = ATTRIBUTE_OF_EVENT[_event_name(record)]
            content = workload.content(field, content_chars)
            set_string_attribute(record, field, content)
            if field == "prompt":
                set_string_attribute(record, "prompt_text", content)  # the CLI sends both, equal
            if field == "tool_input":
                set_string_attribute(record, "tool_parameters", workload.content("tool_parameters", 160))
        bodies.append(request.SerializeToString())
    return bodies


@dataclass(frozen=True)
class EventTexts:
    """The strings the transform hands the engine for one event, each with whether it takes the JSON path."""

    texts: tuple[tuple[str, bool], ...]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def events_of(bodies: list[bytes]) -> list[EventTexts]:
    events = []
    received_at = datetime.now(UTC)
    for body in bodies:
        request = otlp.decode_request(body, otlp.Encoding.PROTOBUF, otlp.ExportLogsServiceRequest)
        for rl in request.resource_logs:
            resource = attributes_of(rl.resource.attributes)
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    mapped = map_record(
                        record, resource, tenant=TENANT, org="bench", plane_by_service=POLICY.plane_by_service,
                        default_plane=POLICY.default_plane, keep_unknown_attributes=True, received_at=received_at,
                    )
                    texts = [(text, name in JSON_CONTENT_FIELDS) for name, text in mapped.raw_content.items()]
                    texts += [(text, False) for text in _strings(mapped.all_other_attributes())]
                    events.append(EventTexts(tuple(texts)))
    return events


# Measurements -----------------------------------------------------------------------------------------------


def engine_only(events: list[EventTexts]) -> dict[str, Any]:
    """One timed pass over the events after the first 50, which warm the engine up: it remembers texts it
    found clean, so a pass over texts it has seen (a repeat, or the warm-up's) would time its memory."""
    engine = build_engine()
    warm_up, timed = events[:50], events[50:] or events
    for event in warm_up:
        for text, is_json in event.texts:
            engine.redact_json_text(text) if is_json else engine.redact_text(text)
    started = time.perf_counter()
    for event in timed:
        for text, is_json in event.texts:
            engine.redact_json_text(text) if is_json else engine.redact_text(text)
    elapsed = time.perf_counter() - started
    characters = sum(len(text) for event in timed for text, _ in event.texts)
    return {
        "events": len(timed),
        "chars_scanned_per_event": round(characters / len(timed)),
        "seconds": round(elapsed, 3),
        "events_per_second": round(len(timed) / elapsed),
        "microseconds_per_event": round(elapsed / len(timed) * 1e6, 1),
    }


def presidio_only(events: list[EventTexts]) -> dict[str, Any]:
    from shared.pii.eval.presidio_baseline import PresidioBaseline  # noqa: PLC0415 (dev-only)

    baseline = PresidioBaseline()  # warmed up: tldextract's one network attempt is not timed
    for event in events[:5]:
        for text, _ in event.texts:
            baseline.analyze(text)
    timed = events[50:] or events  # the events engine_only times
    started = time.perf_counter()
    for event in timed:
        for text, _ in event.texts:
            baseline.analyze(text)
    elapsed = time.perf_counter() - started
    return {
        "events": len(timed),
        "seconds": round(elapsed, 3),
        "events_per_second": round(len(timed) / elapsed, 1),
        "microseconds_per_event": round(elapsed / len(timed) * 1e6, 1),
    }


class _OneEngine:
    def __init__(self) -> None:
        self.engine = build_engine()

    def engine_for(self, tenant: str) -> Any:
        return self.engine


def transform_only(bodies: list[bytes]) -> dict[str, Any]:
    """Decode, map, redact and encode in this process: the stage without the broker."""
    lookup = _OneEngine()

    def batch(body: bytes) -> RawBatch:
        return RawBatch(TENANT, "bench", "lic-bench", otlp.PROTOBUF, time.time_ns(), "req", RECORDS_PER_BATCH, 1, 1,
                        body)

    for body in bodies[:5]:
        for event in transform_batch(batch(body), lookup, POLICY, TransformStats()):
            event.to_json()
    events = 0
    started = time.perf_counter()
    for body in bodies:
        for event in transform_batch(batch(body), lookup, POLICY, TransformStats()):
            event.to_json()
            events += 1
    elapsed = time.perf_counter() - started
    return {"events": events, "seconds": round(elapsed, 3), "events_per_second": round(events / elapsed)}


async def _prepare(bootstrap: str, dsn: str, topics: dict[str, str], bodies: list[bytes], key: MessageKey) -> None:
    conn = await connect(dsn)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    await ensure_topics(
        bootstrap,
        [
            TopicSpec(topics["TOPIC_RAW_LOGS"], 3),
            TopicSpec(topics["TOPIC_CANONICAL"], 3),
            TopicSpec(topics["TOPIC_DEAD_LETTER"], 1),
        ],
    )
    producer = make_producer(bootstrap, 16 * 1024 * 1024)
    await producer.start()
    try:
        for index, body in enumerate(bodies):
            # The headers the receiver writes (see services/receiver and tests/e2e/test_redactor_fault.py).
            headers = raw_batch.encode(RawBatch(TENANT, "bench", "lic-bench", otlp.PROTOBUF, time.time_ns(),
                                                f"req-{index}", RECORDS_PER_BATCH, 1, 1, body), key, "logs")
            await producer.send(topics["TOPIC_RAW_LOGS"], body, key=tenant_key(TENANT), headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


@dataclass
class _CpuWhileWorking:
    """The redactor's CPU seconds and the canonical events produced, at the first poll that saw events and at
    the last: their ratio is the CPU per event at work, without the start-up (imports, engine, group join)."""

    pid: int
    first: tuple[int, float] | None = None
    last: tuple[int, float] | None = None

    def sample(self, produced: int) -> None:
        if produced <= 0:
            return
        try:
            times = psutil.Process(self.pid).cpu_times()
        except psutil.Error:
            return
        point = (produced, times.user + times.system)
        if self.first is None:
            self.first = point
        elif self.last is None or produced > self.last[0]:
            self.last = point

    def seconds_per_1000(self) -> float | None:
        if self.first is None or self.last is None or self.last[0] <= self.first[0]:
            return None
        return (self.last[1] - self.first[1]) / (self.last[0] - self.first[0]) * 1000


async def _count_canonical(
    bootstrap: str, topic: str, expected: int, timeout: float, cpu: _CpuWhileWorking | None = None
) -> list[int]:
    """Timestamps (ms) of the canonical messages, set by the redactor's producer when it sent them.

    While the redactor works only the topic's end offsets are polled, twice a second, so this process takes
    no CPU from it; the messages are read once ``expected`` are there (or ``timeout`` has passed).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, fetch_max_bytes=64 * 1024 * 1024
    )
    await consumer.start()
    stamps: list[int] = []
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            produced = sum((await consumer.end_offsets(partitions)).values())
            if cpu is not None:
                cpu.sample(produced)
            if produced >= expected:
                break
            await asyncio.sleep(0.5)
        await consumer.seek_to_beginning(*partitions)
        remaining = sum((await consumer.end_offsets(partitions)).values())
        while remaining > 0:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if not batch:
                break
            for messages in batch.values():
                stamps.extend(m.timestamp for m in messages)
                remaining -= len(messages)
    finally:
        await consumer.stop()
    return stamps


def full_stage(bodies: list[bytes], work: Path, timeout: float) -> dict[str, Any]:
    broker = start_broker(log_file=work / "broker.log")
    postgres = start_postgres(work / "pgdata", ephemeral=True)
    suffix = uuid.uuid4().hex[:8]
    topics = {
        "TOPIC_RAW_LOGS": f"bench-raw-{suffix}",
        "TOPIC_CANONICAL": f"bench-canonical-{suffix}",
        "TOPIC_DEAD_LETTER": f"bench-dlq-{suffix}",
    }
    expected = len(bodies) * RECORDS_PER_BATCH
    try:
        keys = provision_local_keys(work / "keys")
        raw_key = load_signing_key(keys["RAW_AUTH_KEY_FILE"], "RAW_AUTH_KEY_FILE")
        asyncio.run(_prepare(broker.bootstrap, postgres.dsn, topics, bodies, raw_key))
        env = {
            **os.environ,
            **topics,
            **keys,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "DATABASE_URL": postgres.dsn,
            "REDACTOR_METRICS_PORT": "0",
            "REDACTOR_GROUP_ID": f"bench-redactor-{suffix}",
            "KAFKA_SESSION_TIMEOUT_MS": "4000",
            # Person names on, as by default: the gazetteer and the trained spaCy pipeline.
            "PII_NER_MODEL": DEFAULT_NER_MODEL,
        }
        log = (work / "redactor.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "services.redactor"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        peak_rss = _RssSampler(process.pid)
        peak_rss.start()
        cpu_at_work = _CpuWhileWorking(process.pid)
        try:
            stamps = asyncio.run(
                _count_canonical(broker.bootstrap, topics["TOPIC_CANONICAL"], expected, timeout, cpu_at_work)
            )
            peak_rss.stop()
            try:
                cpu = psutil.Process(process.pid).cpu_times()
                cpu_seconds = cpu.user + cpu.system
            except psutil.Error:
                cpu_seconds = float("nan")
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        broker.stop()
        postgres.stop()
    if len(stamps) < 2:
        tail = (work / "redactor.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"only {len(stamps)} canonical events arrived; redactor log:\n{tail}")
    first, last = min(stamps), max(stamps)
    span = max((last - first) / 1000, 1e-3)
    return {
        "raw_batches": len(bodies),
        "expected_events": expected,
        "canonical_events": len(stamps),
        "seconds_first_to_last": round(span, 3),
        "events_per_second": round((len(stamps) - 1) / span),
        # Includes start-up (imports, engine build, group join), so it overstates the cost per event.
        "redactor_cpu_seconds_total": round(cpu_seconds, 2),
        # Between the first and the last poll that saw canonical events: the cost of the work alone.
        "redactor_cpu_seconds_per_1000_events": _rounded(cpu_at_work.seconds_per_1000(), 3),
        "redactor_peak_rss_mb": round(peak_rss.peak / 2**20, 1),
    }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class _RssSampler(threading.Thread):
    """The redactor's peak resident set size, sampled every 100 ms while it works."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            process = psutil.Process(self.pid)
            while not self._stop_event.is_set():
                self.peak = max(self.peak, process.memory_info().rss)
                self._stop_event.wait(0.1)
        except psutil.Error:
            pass

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def run(args: argparse.Namespace) -> dict[str, Any]:
    bodies = build_realistic_batches(args.fixtures, count=args.batches, seed=args.seed, content_chars=args.content_chars)
    events = events_of(bodies)
    with_content = sum(1 for event in events if any(len(text) >= 100 for text, _ in event.texts))
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
        "batches": {
            "count": len(bodies),
            "records": RECORDS_PER_BATCH,
            "mean_bytes_per_record": sum(map(len, bodies)) // (len(bodies) * RECORDS_PER_BATCH),
            "events_with_content": with_content,
            "content_chars_per_field": args.content_chars,
        },
    }
    report["engine_only"] = engine_only(events)
    if args.presidio_events:
        subset = events[: args.presidio_events]
        report["presidio_only"] = presidio_only(subset)
        report["engine_only_same_events"] = engine_only(subset)
        report["engine_vs_presidio"] = round(
            report["engine_only_same_events"]["events_per_second"] / report["presidio_only"]["events_per_second"], 1
        )
    report["transform_only"] = transform_only(bodies)
    if not args.no_pipeline:
        with tempfile.TemporaryDirectory(prefix="bench-redactor-") as tmp:
            report["full_stage"] = full_stage(bodies, Path(tmp), args.timeout)
    return report


def summary(report: dict[str, Any]) -> str:
    engine = report["engine_only"]
    lines = [
        f"engine only, our engine: {engine['events_per_second']:,} events/s "
        f"({engine['microseconds_per_event']} µs/event, {engine['chars_scanned_per_event']} characters scanned/event)",
    ]
    if "presidio_only" in report:
        ratio = report["engine_vs_presidio"]
        lines.append(
            f"engine only, Presidio (en_core_web_sm): {report['presidio_only']['events_per_second']:,} events/s "
            f"on {report['presidio_only']['events']} events, ours "
            f"{report['engine_only_same_events']['events_per_second']:,} events/s on the same -> ours is {ratio}x "
            f"(target >= {TARGET_RATIO_TO_PRESIDIO}x) {'PASS' if ratio >= TARGET_RATIO_TO_PRESIDIO else 'MISS'}"
        )
    lines.append(f"transform in-process (decode, map, redact, encode; no broker): "
                 f"{report['transform_only']['events_per_second']:,} events/s")
    if "full_stage" in report:
        stage = report["full_stage"]
        rate = stage["events_per_second"]
        lines.append(
            f"full stage, one redactor process: {rate:,} canonical events/s ({stage['canonical_events']:,} of "
            f"{stage['expected_events']:,} events in {stage['seconds_first_to_last']} s) "
            f"(target >= {TARGET_EVENTS_PER_SECOND:,}) {'PASS' if rate >= TARGET_EVENTS_PER_SECOND else 'MISS'}"
        )
        per_1000 = stage.get("redactor_cpu_seconds_per_1000_events")
        if per_1000 is not None:
            lines.append(f"redactor CPU while working: {per_1000} s per 1,000 canonical events "
                         f"({1000 / per_1000:,.0f} events per CPU-second)")
        rss = stage["redactor_peak_rss_mb"]
        lines.append(f"redactor peak RSS with person names on: {rss} MB (target <= {TARGET_RSS_MB}) "
                     f"{'PASS' if rss <= TARGET_RSS_MB else 'MISS'}")
    lines.append(f"load average at start: {report['machine']['load_average_at_start'][0]:.2f} "
                 f"on {report['machine']['cpus']} CPUs")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=300, help="raw batches of 50 records")
    parser.add_argument("--presidio-events", type=int, default=300, help="events Presidio analyses (0: skip)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--content-chars", type=int, default=CONTENT_CHARS, help="size of each content field")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the canonical events")
    parser.add_argument("--no-pipeline", action="store_true", help="engine and transform only, no processes")
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    parser.add_argument("--json", type=Path, default=None, help="also write the full report here")
    args = parser.parse_args()
    report = run(args)
    publish(report, summary(report), args.json)


if __name__ == "__main__":
    main()
