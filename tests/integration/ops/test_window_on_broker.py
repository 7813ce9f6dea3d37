"""Against the real broker: time windows resolve to the right offsets whatever its offsets-for-times answers
(Tansu's differ from Apache Kafka's), ranges read exactly, and the dry run prints the plan."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

from services.auditctl.ops.deadletter import read_all
from services.auditctl.ops.reader import TopicReader
from services.auditctl.ops.window import PartitionRange, TimeWindow, resolve_window
from shared.kafka import make_producer
from tests.conftest import Infra, Topics


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def test_time_window_and_range_reads_on_the_real_broker(infra: Infra, topics: Topics) -> None:
    base = int(time.time() * 1000) - 60_000
    producer = make_producer(infra.bootstrap, 1_000_000)
    await producer.start()
    try:
        for i in range(8):  # partition 0: one a second; partition 1: two early ones; partition 2: empty
            await (await producer.send(topics.raw_logs, b"p0-%d" % i, key=b"t", partition=0,
                                       timestamp_ms=base + i * 1000, headers=[("tenant", b"t")]))
        for i in range(2):
            await (await producer.send(topics.raw_logs, b"p1-%d" % i, key=b"t", partition=1, timestamp_ms=base + i))
    finally:
        await producer.stop()

    async with TopicReader(infra.bootstrap) as reader:
        window = await resolve_window(reader, topics.raw_logs, TimeWindow(_at(base + 2500), _at(base + 5500)))
        assert window.ranges == (PartitionRange(0, 3, 6), PartitionRange(1, 2, 2), PartitionRange(2, 0, 0))
        everything = await resolve_window(reader, topics.raw_logs, TimeWindow(_at(base - 1000)))
        assert [r.messages for r in everything.ranges] == [8, 2, 0]
        nothing = await resolve_window(reader, topics.raw_logs, TimeWindow(_at(base + 3_600_000)))
        assert nothing.messages == 0
        values = [r.value async for r in reader.read_range(topics.raw_logs, 0, 3, 6)]
        assert values == [b"p0-3", b"p0-4", b"p0-5"]
        # A second topic with the same reader (metadata is asked of the cluster, not the assignment).
        assert len(await read_all(reader, topics.raw_logs)) == 10

    env = {**os.environ, **topics.env(), "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap}
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.auditctl", "replay", "--offsets", "0:2-5", "--offsets", "1:0-",
                         "--dry-run"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "partition 0: offsets 2-5 (3 messages)" in result.stdout
    assert "partition 1: offsets 0-2 (2 messages)" in result.stdout
    assert "total: 5 messages" in result.stdout
