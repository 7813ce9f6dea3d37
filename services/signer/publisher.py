"""Publishes every signed checkpoint to the witness outside PostgreSQL, beside the appends, never in their way.

The checkpoint table is the queue: a cursor per chain (``checkpoint_witness_cursor``) says how far its
checkpoints were published. Each pass reads the checkpoints past the cursors, publishes them (the witness
skips records it already holds), then moves the cursors. If the process dies in between, the next pass
publishes the same records again and nothing is lost or doubled. A witness that cannot be reached is
retried with backoff; the appends go on meanwhile, and the checkpoints wait in the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from itertools import groupby

import asyncpg
from prometheus_client import CollectorRegistry, Counter

from shared.db.errors import is_retryable_db_error
from shared.pipeline import Backoff, describe
from shared.witness import Witness, WitnessError, checkpoint_record

log = logging.getLogger("signer.witness")

_PENDING = (
    "SELECT c.* FROM chain_checkpoints c LEFT JOIN checkpoint_witness_cursor w USING (tenant_id)"
    " WHERE c.chain_seq > coalesce(w.published_seq, 0) ORDER BY c.tenant_id, c.chain_seq LIMIT $1"
)


class PublisherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = Counter(
            "signer_witness_records_published",
            "Checkpoints handed to the witness (it skips those it holds).",
            registry=registry,
        )
        self.failures = Counter(
            "signer_witness_publish_failures", "Passes that could not publish to the witness.", registry=registry
        )


async def publish_pending(conn: asyncpg.Connection, witness: Witness, limit: int = 1_000) -> int:
    """One pass: publish up to ``limit`` checkpoints past the cursors; returns how many were read."""
    rows = await conn.fetch(_PENDING, limit)
    for tenant, group in groupby(rows, key=lambda r: str(r["tenant_id"])):
        records = [checkpoint_record(row) for row in group]
        # File or network I/O: on a thread, so the signer's event loop keeps appending.
        await asyncio.to_thread(witness.publish, tenant, records)
        await conn.execute(
            "INSERT INTO checkpoint_witness_cursor (tenant_id, published_seq, witness, published_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO UPDATE SET"
            " published_seq = GREATEST(checkpoint_witness_cursor.published_seq, EXCLUDED.published_seq),"
            " witness = EXCLUDED.witness, published_at = EXCLUDED.published_at",
            tenant,
            int(records[-1]["chain_seq"]),
            witness.description,
            datetime.now(UTC),
        )
    return len(rows)


async def run_publisher(
    pool: asyncpg.Pool,
    witness: Witness,
    stop: asyncio.Event,
    *,
    interval: float = 1.0,
    metrics: PublisherMetrics | None = None,
) -> None:
    """Publish until ``stop``; every ``interval`` seconds, or at once while a backlog remains."""
    backoff = Backoff(0.5, 30.0)
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                read = await publish_pending(conn, witness)
            backoff.reset()
            if metrics is not None:
                metrics.published.inc(read)
            if read >= 1_000:
                continue  # a backlog: keep going
        except (WitnessError, OSError) as exc:
            if metrics is not None:
                metrics.failures.inc()
            log.warning("cannot publish checkpoints to the witness, will retry", extra={"error": describe(exc)})
            await backoff.sleep(stop)
            continue
        except Exception as exc:
            if not is_retryable_db_error(exc):
                log.exception("checkpoint publisher failed, will retry")
            if metrics is not None:
                metrics.failures.inc()
            await backoff.sleep(stop)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
