"""The taken-sequence check answered from the signer's memory of its sessions (``SequenceClaims``) flags
exactly the rows the database lookup flags: the same scenario, run once with the memory and once without, on
two tenants of one database, gives the same results and the same ``sequence_conflict`` flags, through
duplicates, conflicts within a batch and across batches, prepared and locked appends, batches written
together, another signer moving the head, a restart, and a memory too small to keep every session."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import asyncpg
import pytest

from services.signer.appender import (
    Head,
    OffsetEvent,
    PreparedBatch,
    SequenceClaims,
    append_batch,
    append_prepared,
    append_prepared_together,
    prepare,
)
from services.signer.rows import ChainRow
from shared.canonical import CanonicalEvent
from shared.enrollment import record_signing_key
from shared.keys import Ed25519Signer
from shared.verify import published_keys, verify_tenant
from tests.integration.signer.test_append import event

STEPS = 40
OPERATIONS = ("prepared", "prepared", "together", "locked", "other signer", "restart")


def _events(rng: random.Random, count: int, start: int) -> list[tuple[str, int, str | None, int | None, int]]:
    """(tenant suffix, number, session, sequence, variant): few sessions and sequences, so they collide often;
    a repeated (number, variant) is a retry of the same event, a new variant on a taken place a conflict."""
    drawn = []
    for n in range(start, start + count):
        session = rng.choice(("s1", "s2", "s3", "s4", None))
        sequence = rng.choice((0, 1, 2, 3, 4, 5, None))
        drawn.append((rng.choice(("x", "y")), n, session, sequence, 0))
    return drawn


def _event(run: str, drawn: tuple[str, int, str | None, int | None, int]) -> CanonicalEvent:
    suffix, n, session, sequence, variant = drawn
    tenant = f"{run}-{suffix}"
    return dataclasses.replace(event(n, tenant), event_id=f"{tenant}-ev-{n}-{variant}", session_id=session,
                               event_sequence=sequence, correlation_id=f"p{variant}")


class Run:
    """One signer (and, now and then, another one) appending a scenario for the tenants of ``run``."""

    def __init__(self, db: asyncpg.Connection, run: str, key: Ed25519Signer, other: Ed25519Signer,
                 claims: SequenceClaims | None) -> None:
        self.db, self.run, self.key, self.other, self.claims = db, run, key, other, claims
        self.heads: dict[str, Head] = {}
        self.offsets = {0: 0, 1: 0}
        self.results: list[Any] = []

    def _batch(self, drawn: list[tuple[str, int, str | None, int | None, int]], partition: int) -> list[OffsetEvent]:
        first = self.offsets[partition]
        self.offsets[partition] += len(drawn)
        return [OffsetEvent(first + i, ChainRow.of(_event(self.run, d))) for i, d in enumerate(drawn)]

    def _record(self, result: Any) -> None:
        conflicts = sorted((c[0].removeprefix(self.run), c[1], c[2], c[3].removeprefix(self.run)) for c in result.conflicts)
        self.results.append((result.appended, result.duplicates, conflicts))
        if not result.as_prepared:
            self.heads.clear()

    async def _prepare(self, batch: list[OffsetEvent], in_flight: frozenset[str] = frozenset()) -> PreparedBatch:
        return await prepare(self.db, self.key, batch, self.heads, in_flight=in_flight)

    async def step(self, operation: str, drawn: list[Any], more: list[Any]) -> None:
        topic = f"topic-{self.run}"
        if operation == "prepared":
            prepared = await self._prepare(self._batch(drawn, 0))
            self._record(await append_prepared(self.db, self.key, prepared, group="g", topic=topic, partition=0,
                                               claims=self.claims))
        elif operation == "together":
            first = await self._prepare(self._batch(drawn, 0))
            second = await self._prepare(self._batch(more, 0), first.event_ids)
            result = await append_prepared_together(self.db, [(0, first), (0, second)], group="g", topic=topic,
                                                    claims=self.claims)
            if result is None:
                result = await append_batch(self.db, self.key, group="g", topic=topic, partition=0,
                                            batch=[*first.batch, *second.batch], claims=self.claims)
            self._record(result)
        elif operation == "locked":
            self._record(await append_batch(self.db, self.key, group="g", topic=topic, partition=0,
                                            batch=self._batch(drawn, 0), claims=self.claims))
        elif operation == "other signer":  # a zombie on another partition: it has no memory of this signer's
            result = await append_batch(self.db, self.other, group="g", topic=topic, partition=1,
                                        batch=self._batch(drawn, 1))
            self.results.append((result.appended, result.duplicates, sorted(
                (c[0].removeprefix(self.run), c[1], c[2], c[3].removeprefix(self.run)) for c in result.conflicts)))
        elif operation == "restart":
            self.heads.clear()
            if self.claims is not None:
                self.claims = SequenceClaims(self.claims.max_sessions, self.claims.max_claims)

    async def flags(self) -> dict[str, tuple[int, bool]]:
        rows = await self.db.fetch(
            "SELECT event_id, chain_seq, sequence_conflict FROM audit_logs WHERE tenant_id LIKE $1 || '-%'", self.run)
        return {row["event_id"].removeprefix(self.run): (row["chain_seq"], row["sequence_conflict"]) for row in rows}


@pytest.mark.parametrize(("seed", "max_sessions", "max_claims"), [(1, 4_096, 262_144), (2, 4_096, 262_144),
                                                                  (3, 2, 262_144), (4, 4_096, 6)])
async def test_flags_from_memory_are_the_flags_from_the_database(
    db: asyncpg.Connection, signing_key: Ed25519Signer, seed: int, max_sessions: int, max_claims: int
) -> None:
    other = Ed25519Signer.generate()
    await record_signing_key(db, signing_key.public_key)
    await record_signing_key(db, other.public_key)
    remembering = Run(db, "mem", signing_key, other, SequenceClaims(max_sessions, max_claims))
    asking = Run(db, "ask", signing_key, other, None)
    rng = random.Random(seed)
    seen: list[Any] = []
    number = 0
    for _ in range(STEPS):
        operation = rng.choice(OPERATIONS)
        batches = []
        for _ in range(2):
            drawn = _events(rng, rng.randint(1, 6), number)
            number += len(drawn)
            # Retries of events already drawn (duplicates), and other events on their places (conflicts).
            for earlier in rng.sample(seen, min(len(seen), rng.randint(0, 2))):
                drawn.append(earlier)
            for earlier in rng.sample(seen, min(len(seen), rng.randint(0, 1))):
                drawn.append((*earlier[:4], earlier[4] + 1 + number))
            rng.shuffle(drawn)
            seen += drawn
            batches.append(drawn)
        for run in (remembering, asking):
            await run.step(operation, *batches)
        assert remembering.results == asking.results, operation
    flags = await remembering.flags()
    assert flags == await asking.flags()
    assert any(flagged for _, flagged in flags.values())
    keys = await published_keys(db)
    for tenant in ("mem-x", "mem-y"):
        assert (await verify_tenant(db, tenant, keys)).ok


async def test_a_session_is_read_once_while_the_head_stays_where_this_signer_left_it(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    claims = SequenceClaims()
    heads: dict[str, Head] = {}
    reads: list[str] = []
    db.add_query_logger(lambda record: reads.append(record.query) if "OFFSET 0" in record.query else None)

    async def append(first: int, events: list[CanonicalEvent]) -> Any:
        prepared = await prepare(db, signing_key, [OffsetEvent(first + i, ChainRow.of(e)) for i, e in
                                                   enumerate(events)], heads)
        return await append_prepared(db, signing_key, prepared, group="g", topic="c", partition=0, claims=claims)

    await append(0, [event(1), event(2)])
    assert len(reads) == 1
    result = await append(2, [event(3), dataclasses.replace(event(4), event_id="t1-forged-2", event_sequence=2)])
    assert result.as_prepared and len(reads) == 1
    assert sorted(c[3] for c in result.conflicts) == ["t1-ev-2", "t1-forged-2"]
    # Another signer moves the head: the session is read again, and what it wrote is seen.
    await append_batch(db, signing_key, group="g", topic="c", partition=1,
                       batch=[OffsetEvent(0, dataclasses.replace(event(5), event_id="t1-other-5"))])
    heads.clear()
    result = await append(4, [dataclasses.replace(event(6), event_id="t1-forged-5", event_sequence=5)])
    assert len(reads) == 2
    assert sorted(c[3] for c in result.conflicts) == ["t1-forged-5", "t1-other-5"]
