"""kill -9 the redactor in the middle of a load, restart it: every raw record still yields exactly one
canonical event downstream, once duplicates are removed by event id."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from shared import otlp
from shared.canonicalize.mapping import attributes_of, map_record
from shared.kafka import make_producer, tenant_key
from tests.bench.payloads import build_batches
from tests.conftest import Infra, Topics
from tests.e2e.harness import Pipeline
from tests.messages_support import raw_headers

BATCHES = 80
RECORDS_PER_BATCH = 50


def _expected_ids(bodies: list[bytes]) -> set[str]:
    ids = set()
    for body in bodies:
        request = otlp.decode_request(body, otlp.Encoding.PROTOBUF, otlp.ExportLogsServiceRequest)
        for rl in request.resource_logs:
            resource = attributes_of(rl.resource.attributes)
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    ids.add(
                        map_record(
                            record,
                            resource,
                            tenant="t-load",
                            org="load",
                            plane_by_service={},
                            default_plane="claude_code",
                            keep_unknown_attributes=False,
                            received_at=datetime.now(UTC),
                        ).event_id
                    )
    return ids


async def test_redactor_killed_mid_load_loses_nothing(
    infra: Infra, topics: Topics, database_url: str, tmp_path: Path, fixtures_dir: Path
) -> None:
    bodies = [b.body for b in build_batches(fixtures_dir, count=BATCHES, records_per_batch=RECORDS_PER_BATCH)]
    expected = _expected_ids(bodies)
    assert len(expected) == BATCHES * RECORDS_PER_BATCH

    producer = make_producer(infra.bootstrap, 1_000_000)
    await producer.start()
    try:
        for index, body in enumerate(bodies):
            headers = raw_headers(body, tenant="t-load", org="load", license_id="lic", request_id=f"req-{index}",
                                  record_count=RECORDS_PER_BATCH)
            await producer.send(topics.raw_logs, body, key=tenant_key("t-load"), headers=headers)
        await producer.flush()
    finally:
        await producer.stop()

    pipeline = Pipeline(database_url, infra.bootstrap, topics, tmp_path)
    consumer = AIOKafkaConsumer(
        topics.canonical,
        bootstrap_servers=infra.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    seen: list[str] = []
    try:
        pipeline.start("redactor")
        killed = False
        deadline = time.monotonic() + 120
        while len(set(seen)) < len(expected) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                seen.extend(dict(m.headers)["event_id"].decode() for m in messages)
            if not killed and len(seen) >= len(expected) // 4:
                pipeline.kill("redactor")
                killed = True
                await asyncio.sleep(0.5)
                pipeline.start("redactor")
        assert killed, "the redactor finished before it could be killed; raise the load"
    finally:
        await consumer.stop()
        pipeline.stop()
    assert set(seen) == expected, f"missing {len(expected - set(seen))}, unexpected {len(set(seen) - expected)}"
    # At-least-once: a replayed tail is allowed, and the signer drops it by event id.
    assert len(seen) >= len(expected)
