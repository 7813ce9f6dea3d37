"""Signer replay: the CPU each stage of the signer's main process spends per row, without broker or timing noise.

Usage: python -m tests.bench.bench_signer_replay [--events 20000] [--tenants 4] [--rounds 5] [--profile STAGE]

The messages ``bench_signer`` preloads are built in memory and run through the signer's own code, stage by
stage, each timed in process CPU time (the best of ``--rounds``): decode and authenticate
(``decode_authenticated_row``), hash and Merkle (``chain_rows`` with a signer that returns empty signatures,
so the signing helper's work is left out) and the COPY encoding of the three tables a batch writes. The COPY
goes to a temporary table without indexes, so what is timed is this process's encoding, not the database's
work; it goes through ``copy_records`` as the signer's does (compiled where built). With ``DATABASE_URL``
unset, an embedded PostgreSQL is started for the COPY stage.
``--profile decode|chain|copy`` prints the cProfile of that stage instead.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from services.signer.appender import (
    _EXISTING_EVENT_IDS,
    CONTENT_COLUMNS,
    GENESIS,
    INSERT_COLUMNS,
    SUBTREE_COLUMNS,
    Chained,
    SequenceClaims,
    _contested_sequences,
    chain_rows,
    copy_records,
)
from services.signer.rows import ChainRow
from services.signer.worker import decode_authenticated_row
from shared.db.migrate import apply_migrations
from shared.db.pool import connect
from shared.keys import Ed25519Signer
from shared.messages import canonical_event
from shared.messages.auth import REDACTOR_SCOPE, Keyring, MessageKey
from tests.bench.bench_signer import make_events
from tests.bench.databases import BenchDatabase

BATCH = 500


class Message(NamedTuple):
    """The fields of a consumer record the signer reads."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class _NoSignatures:
    async def sign_many(self, digests: Sequence[bytes]) -> list[bytes]:
        return [bytes(64)] * len(digests)

    async def close(self) -> None:
        return None


def messages(events: int, tenants: int) -> tuple[list[Message], Keyring]:
    key = MessageKey.of(os.urandom(32), "redactor", REDACTOR_SCOPE)
    out = []
    for offset, payload in enumerate(make_events(events, tenants)):
        event_id = json.loads(payload)["event_id"]
        out.append(Message("canonical", 0, offset, b"t", payload, canonical_event.encode_value(event_id, payload, key)))
    return out, Keyring([key])


def decode_all(batch: list[Message], keyring: Keyring) -> list[ChainRow]:
    return [decode_authenticated_row(message, keyring) for message in batch]


async def chain_all(rows: list[ChainRow], signer: Ed25519Signer) -> list[Chained]:
    heads = {tenant: replace(GENESIS) for tenant in {row.tenant_id for row in rows}}
    out = []
    for first in range(0, len(rows), BATCH):
        batch = rows[first:first + BATCH]
        chained = await chain_rows(batch, heads, signer, None, datetime.now(UTC), _NoSignatures())
        out.append(await chained.complete())
    return out


async def copy_all(conn: Any, chained: list[Chained]) -> None:
    """The COPY of every batch, rolled back: each round writes into empty tables."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        for batch in chained:
            await copy_records(conn, "replay_content", batch.contents, CONTENT_COLUMNS)
            await copy_records(conn, "replay_subtrees", batch.subtrees, SUBTREE_COLUMNS)
            await copy_records(conn, "replay_logs", batch.records, INSERT_COLUMNS)
    finally:
        await transaction.rollback()


async def cpu_of(work: Callable[[], Awaitable[Any]], rounds: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(rounds):
        started = time.process_time()
        result = await work()
        best = min(best, time.process_time() - started)
    return best, result


async def index_costs(conn: Any, chained: list[Chained], events: int, rounds: int) -> None:
    """The database's CPU per row for the COPY of ``audit_logs`` rows with all its indexes, and with each left
    out in turn: what each index costs the database on every append."""
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    names = [row["indexname"] for row in await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'audit_logs' ORDER BY indexname")]
    await conn.execute("CREATE TABLE replay_indexed (LIKE audit_logs INCLUDING ALL)")
    definitions = {row["indexname"]: row["indexdef"] for row in await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'replay_indexed'")}

    async def cost() -> float:
        best = float("inf")
        for _ in range(rounds):
            await conn.execute("TRUNCATE replay_indexed")
            await conn.execute("CHECKPOINT")
            before = _oncpu_seconds(backend)
            for batch in chained:
                async with conn.transaction():
                    await conn.copy_records_to_table("replay_indexed", records=batch.records,
                                                     columns=list(INSERT_COLUMNS))
            best = min(best, _oncpu_seconds(backend) - before)
        return best / events * 1e6

    everything = await cost()
    print(f"  database CPU per row, COPY into audit_logs with all {len(names)} indexes: {everything:.1f} us")
    for name, definition in sorted(definitions.items()):
        constraint = await conn.fetchval(
            "SELECT conname FROM pg_constraint WHERE conindid = (SELECT oid FROM pg_class WHERE relname = $1)", name)
        if constraint:
            await conn.execute(f"ALTER TABLE replay_indexed DROP CONSTRAINT {constraint}")
        else:
            await conn.execute(f"DROP INDEX {name}")
        without = await cost()
        if constraint:
            await conn.execute(f"ALTER TABLE replay_indexed ADD CONSTRAINT {constraint} "
                               + definition.split(" USING btree ", 1)[1].join(
                                   ("PRIMARY KEY " if name.endswith("_pkey") else "UNIQUE ", "")))
        else:
            await conn.execute(definition)
        print(f"  {name:45s} {everything - without:5.1f} us/row")
    await conn.execute("CREATE TABLE replay_bare (LIKE audit_logs INCLUDING DEFAULTS INCLUDING IDENTITY)")
    await conn.execute("DROP TABLE replay_indexed")
    await conn.execute("ALTER TABLE replay_bare RENAME TO replay_indexed")
    print(f"  every index                                   {everything - await cost():5.1f} us/row")
    await conn.execute("DROP TABLE replay_indexed")


def _oncpu_seconds(pid: int) -> float:
    """Time the process has run on a CPU, in nanosecond resolution (Linux's schedstat; the tick-based
    ``cpu_times`` is too coarse for one statement)."""
    with open(f"/proc/{pid}/schedstat") as stat:
        return int(stat.read().split()[0]) / 1e9


STORED_LOOKUP = "stored ids lookup"


async def statement_costs(conn: Any, chained: list[Chained], events: int) -> None:
    """The database's CPU and WAL bytes per row for each statement of the signer's transaction, batch by batch,
    as ``prepare`` and ``_write`` issue them, into the real (empty) tables, and for its commit."""
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    spent: dict[str, float] = {}
    logged: dict[str, int] = {}

    async def timed(name: str, statement: Awaitable[Any]) -> Any:
        # The WAL position is read outside the CPU measured, by queries of its own.
        wal_before = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")  # as an int (asyncpg's codec)
        before = _oncpu_seconds(backend)
        result = await statement
        spent[name] = spent.get(name, 0.0) + _oncpu_seconds(backend) - before
        logged[name] = logged.get(name, 0) + await conn.fetchval("SELECT pg_current_wal_insert_lsn()") - wal_before
        return result

    claims = SequenceClaims()  # as the signer keeps it: each session read once while its head stays put
    seq_at, prev_at = INSERT_COLUMNS.index("chain_seq"), INSERT_COLUMNS.index("prev_hash")
    hash_at, tenant_at = INSERT_COLUMNS.index("row_hash"), INSERT_COLUMNS.index("tenant_id")
    for batch in chained:
        rows = batch.records
        locked: dict[str, tuple[int, bytes]] = {}
        after: dict[str, tuple[int, bytes]] = {}
        for row in rows:
            locked.setdefault(row[tenant_at], (row[seq_at] - 1, row[prev_at]))
            after[row[tenant_at]] = (row[seq_at], row[hash_at])
        transaction = conn.transaction()
        await transaction.start()
        try:
            await timed(STORED_LOOKUP, conn.fetch(
                _EXISTING_EVENT_IDS, [row[INSERT_COLUMNS.index("event_id")] for row in rows]))
            claimed = batch.sequence_claims()
            await timed("taken sequences", _contested_sequences(conn, claimed, claims, locked))
            await timed("COPY audit_content", copy_records(conn, "audit_content", batch.contents, CONTENT_COLUMNS))
            await timed("COPY merkle_subtrees", copy_records(conn, "merkle_subtrees", batch.subtrees, SUBTREE_COLUMNS))
            await timed("COPY audit_logs", copy_records(conn, "audit_logs", rows, INSERT_COLUMNS))
        except BaseException:
            await transaction.rollback()
            raise
        await timed("commit", transaction.commit())
        claims.committed(claimed, locked, after)
    for name, seconds in spent.items():
        print(f"  {name:22s} {seconds / events * 1e6:5.1f} us/row {logged[name] / events:7.0f} WAL bytes/row")
    # The lookup is made only for a while after an event already stored was met (appender.StoredDuplicates).
    usual = [name for name in spent if name != STORED_LOOKUP]
    print(f"  {'together':22s} {sum(spent[name] for name in usual) / events * 1e6:5.1f} us/row "
          f"{sum(logged[name] for name in usual) / events:7.0f} WAL bytes/row (without the {STORED_LOOKUP})")


async def run(events: int, tenants: int, rounds: int, profile: str | None, indexes: bool = False,
              statements: bool = False) -> None:
    batch, keyring = messages(events, tenants)
    # As the signer runs (services/signer/__main__.py): what exists at start-up is out of the collector's way.
    gc.freeze()
    gc.set_threshold(1_000_000, 50, 100)
    signer = Ed25519Signer.generate()
    database = await BenchDatabase.open("bench_replay", Path(tempfile.mkdtemp(prefix="bench-replay-")))
    dsn = database.dsn
    try:
        conn = await connect(dsn, bulk_writer=True)  # as the signer connects
        await apply_migrations(conn)
        await conn.execute(
            "CREATE TEMP TABLE replay_logs (LIKE audit_logs INCLUDING DEFAULTS INCLUDING IDENTITY);"
            "CREATE TEMP TABLE replay_content (LIKE audit_content);"
            "CREATE TEMP TABLE replay_subtrees (LIKE merkle_subtrees)"
        )

        async def decode() -> list[ChainRow]:
            return decode_all(batch, keyring)

        rows: list[ChainRow] = decode_all(batch, keyring)

        async def chain() -> list[Chained]:
            return await chain_all(rows, signer)  # chaining sets the chain columns anew each time

        chained: list[Chained] = await chain()

        async def copy() -> None:
            await copy_all(conn, chained)

        stages: dict[str, Callable[[], Awaitable[Any]]] = {"decode": decode, "chain": chain, "copy": copy}
        if indexes:
            await index_costs(conn, chained, events, rounds)
            return
        if statements:
            await statement_costs(conn, chained, events)
            return
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(rounds):
                await stages[profile]()
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            return
        total = 0.0
        for name, stage in stages.items():
            seconds, _ = await cpu_of(stage, rounds)
            total += seconds
            print(f"  {name:7s} {seconds / events * 1e6:6.1f} us/row")
        print(f"  total   {total / events * 1e6:6.1f} us/row (main process, signing and database left out)")
        await conn.close()
    finally:
        await database.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", choices=("decode", "chain", "copy"), default=None)
    parser.add_argument("--indexes", action="store_true",
                        help="the database's CPU per row for each index of audit_logs instead")
    parser.add_argument("--statements", action="store_true",
                        help="the database's CPU and WAL per row for each statement of the signer's transaction instead")
    args = parser.parse_args()
    asyncio.run(run(args.events, args.tenants, args.rounds, args.profile, args.indexes, args.statements))


if __name__ == "__main__":
    main()
