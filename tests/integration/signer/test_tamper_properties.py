"""Property-based tampering (Hypothesis, derandomised): whatever someone with write access to the database does
to a chain of thousands of rows checked in small ranges, verify names the right kind of break at the right
sequence number. The table-driven cases in test_tamper.py stay; these draw the sizes and alignments.

Each example tampers inside a transaction on a real PostgreSQL chain, verifies through the same connection,
and rolls back, so one chain (signed once, its checkpoints published to a real witness directory) serves
every example. Keys come from the witness's pin, checkpoints from the witness, as ``make verify`` does.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.signer.appender import CheckpointPolicy, OffsetEvent, append_batch, checkpoint_idle_chains
from services.signer.publisher import publish_pending
from shared import verify
from shared.chain import HASHED_COLUMNS, row_hash, stored_canonical_bytes
from shared.db.pool import connect
from shared.enrollment import enroll, pinned_keys, record_signing_key
from shared.keys import Ed25519Signer
from shared.verify import Break, Checkpoint, KeyBook, load_key_book, verify_tenant, witnessed_checkpoints
from shared.witness import DirectoryWitness
from tests.conftest import Infra, create_database
from tests.integration.signer.test_append import event

ROWS = 3_000
RANGE = 50
TENANT = "t1"


@dataclass(frozen=True)
class Chain:
    dsn: str
    pinned: dict[str, bytes]
    witnessed: list[Checkpoint]
    column_types: dict[str, str]


async def _build(dsn: str, witness_dir: Path) -> Chain:
    key = Ed25519Signer.generate()
    witness = DirectoryWitness(witness_dir)
    conn = await connect(dsn)
    try:
        await enroll(conn, witness, key.public_key)
        policy = CheckpointPolicy(every_rows=200, every=timedelta(hours=1))
        for start in range(0, ROWS, 100):
            batch = [OffsetEvent(i, event(i)) for i in range(start, start + 100)]
            await append_batch(conn, key, group="g", topic="c", partition=0, batch=batch, checkpoints=policy)
        # The quiet chain's tail gets its checkpoint too, as the signer gives it once the chain goes quiet.
        await checkpoint_idle_chains(conn, key, policy, now=datetime.now(UTC) + timedelta(hours=2))
        await publish_pending(conn, witness)
        types = {
            r["column_name"]: r["data_type"]
            for r in await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'audit_logs'"
            )
        }
    finally:
        await conn.close()
    witnessed = witnessed_checkpoints(witness.checkpoint_records())
    assert witnessed[-1].chain_seq == ROWS
    return Chain(dsn, await pinned_keys(witness), witnessed, types)


@pytest.fixture(scope="module")
def chain(infra: Infra) -> Iterator[Chain]:
    with tempfile.TemporaryDirectory(prefix="witness-") as folder:
        dsn = asyncio.run(create_database(infra.server_dsn))
        yield asyncio.run(_build(dsn, Path(folder)))


@pytest.fixture(scope="module", autouse=True)
def small_ranges() -> Iterator[None]:
    saved, verify.RANGE_ROWS = verify.RANGE_ROWS, RANGE
    yield
    verify.RANGE_ROWS = saved


Apply = Callable[[asyncpg.Connection, Chain], Awaitable[object]]


@dataclass(frozen=True)
class Tamper:
    name: str
    apply: Apply
    seq: int
    kind: str
    detail: str = ""

    def __repr__(self) -> str:
        return f"Tamper({self.name} -> {self.kind} at {self.seq})"


async def _run(chain: Chain, tamper: Tamper) -> list[Break]:
    conn = await connect(chain.dsn)
    try:
        transaction = conn.transaction()
        await transaction.start()
        try:
            # Tampering as a superuser would: past any append-only trigger.
            await conn.execute("SET LOCAL session_replication_role = replica")
            await tamper.apply(conn, chain)
            book: KeyBook = await load_key_book(conn, chain.pinned)
            report = await verify_tenant(conn, TENANT, book, checkpoints=chain.witnessed)
            return report.breaks
        finally:
            await transaction.rollback()
    finally:
        await conn.close()


# --- the tamperings ----------------------------------------------------------------------------------------


def _delete(first: int, last: int) -> Tamper:
    async def apply(db: asyncpg.Connection, _: Chain) -> None:
        await db.execute("DELETE FROM audit_logs WHERE chain_seq BETWEEN $1 AND $2", first, last)

    # Rows gone up to the end, with the head still pointing past them: the tail is missing.
    kind = "truncated" if last >= ROWS else "deleted"
    return Tamper(f"delete {first}-{last}", apply, first, kind)


def _cut_tail(keep: int) -> Tamper:
    """The careful attacker: the tail deleted, the head rewound to the new last row, newer checkpoints gone."""

    async def apply(db: asyncpg.Connection, _: Chain) -> None:
        await db.execute("DELETE FROM audit_logs WHERE chain_seq > $1", keep)
        head = await db.fetchval("SELECT row_hash FROM audit_logs WHERE chain_seq = $1", keep) or bytes(32)
        await db.execute("UPDATE chain_heads SET head_seq = $1, head_hash = $2", keep, head)
        await db.execute("DELETE FROM chain_checkpoints WHERE chain_seq > $1", keep)
        await db.execute("UPDATE checkpoint_witness_cursor SET published_seq = least(published_seq, $1)", keep)

    return Tamper(f"cut tail after {keep}, head and checkpoints rewound", apply, keep + 1, "truncated")


def _rewind_head(to: int) -> Tamper:
    async def apply(db: asyncpg.Connection, _: Chain) -> None:
        head = await db.fetchval("SELECT row_hash FROM audit_logs WHERE chain_seq = $1", to) or bytes(32)
        await db.execute("UPDATE chain_heads SET head_seq = $1, head_hash = $2", to, head)

    return Tamper(f"head rewound to {to}", apply, to + 1, "head_mismatch")


def _insert(at: int) -> Tamper:
    """A row slipped in at ``at`` that links and hashes correctly, signed by a key no one pinned."""

    async def apply(db: asyncpg.Connection, _: Chain) -> None:
        template = dict(await db.fetchrow("SELECT * FROM audit_logs WHERE chain_seq = $1", min(at, ROWS)))
        await db.execute("UPDATE audit_logs SET chain_seq = -chain_seq WHERE chain_seq >= $1", at)
        await db.execute("UPDATE audit_logs SET chain_seq = -chain_seq + 1 WHERE chain_seq < 0")
        prev = await db.fetchval("SELECT row_hash FROM audit_logs WHERE chain_seq = $1", at - 1) or bytes(32)
        intruder = Ed25519Signer.generate()
        template.update(event_id=f"forged-{at}", chain_seq=at, prev_hash=bytes(prev), signing_key_id=intruder.key_id)
        template["row_hash"] = row_hash(
            template["prev_hash"], stored_canonical_bytes(template), template["hash_version"]
        )
        template["signature"] = intruder.sign(template["row_hash"])
        del template["id"]
        columns = list(template)
        placeholders = ", ".join(f"${i + 1}" for i in range(len(columns)))
        await db.execute(f"INSERT INTO audit_logs ({', '.join(columns)}) VALUES ({placeholders})", *template.values())
        if at > ROWS:  # appended: the head is moved onto it, or the rows would go on past the head
            await db.execute("UPDATE chain_heads SET head_seq = $1, head_hash = $2", at, template["row_hash"])

    # Appended after the last row, nothing skips over it: it is simply a row signed by an untrusted key.
    kind = "inserted" if at <= ROWS else "bad_signature"
    return Tamper(f"forged row inserted at {at}", apply, at, kind)


def _swap(a: int, b: int) -> Tamper:
    async def apply(db: asyncpg.Connection, _: Chain) -> None:
        await db.execute("UPDATE audit_logs SET chain_seq = -1 WHERE chain_seq = $1", a)
        await db.execute("UPDATE audit_logs SET chain_seq = $1 WHERE chain_seq = $2", a, b)
        await db.execute("UPDATE audit_logs SET chain_seq = $1 WHERE chain_seq = -1", b)

    return Tamper(f"rows {a} and {b} swapped", apply, min(a, b), "reordered")


_CHANGE_BY_TYPE = {
    "text": "coalesce({c}, '') || 'x'",
    "bigint": "coalesce({c}, 0) + 1",
    "integer": "coalesce({c}, 0) + 1",
    "smallint": "{c} + 1",
    "boolean": "NOT coalesce({c}, false)",
    "numeric": "coalesce({c}, 0) + 0.000001",
    "jsonb": "{c} || '{{\"tampered\": 1}}'::jsonb",
    "timestamp with time zone": "{c} + interval '1 microsecond'",
}


def _edit(column: str, at: int) -> Tamper:
    async def apply(db: asyncpg.Connection, chain: Chain) -> None:
        change = _CHANGE_BY_TYPE[chain.column_types[column]].format(c=column)
        if column == "chain_seq":
            change = "chain_seq + 1000000"  # moved out of its place
        await db.execute(f"UPDATE audit_logs SET {column} = {change} WHERE chain_seq = $1", at)

    # A row moved to another sequence number or another chain leaves a gap where it was; the last row moved to
    # another chain leaves the rows stopping short of the head.
    kind = "deleted" if column in ("chain_seq", "tenant_id") else "modified"
    if column == "tenant_id" and at == ROWS:
        kind = "truncated"
    return Tamper(f"{column} of row {at} edited", apply, at, kind)


def _resign(at: int, *, known_to_database: bool) -> Tamper:
    """Row ``at`` changed and signed again with a key of the attacker's, perhaps enrolled in the database."""

    async def apply(db: asyncpg.Connection, _: Chain) -> None:
        intruder = Ed25519Signer.generate()
        if known_to_database:
            await record_signing_key(db, intruder.public_key)
            await db.execute(
                "INSERT INTO key_activations (tenant_id, from_seq, key_id) VALUES ($1, $2, $3)"
                " ON CONFLICT (tenant_id, from_seq) DO UPDATE SET key_id = EXCLUDED.key_id",
                TENANT, at, intruder.key_id,
            )
        row = dict(await db.fetchrow("SELECT * FROM audit_logs WHERE chain_seq = $1", at))
        row.update(signing_key_id=intruder.key_id, user_email="someone@else.example")
        digest = row_hash(bytes(row["prev_hash"]), stored_canonical_bytes(row), row["hash_version"])
        await db.execute(
            "UPDATE audit_logs SET signing_key_id = $2, user_email = $3, row_hash = $4, signature = $5"
            " WHERE chain_seq = $1",
            at, intruder.key_id, row["user_email"], digest, intruder.sign(digest),
        )

    where = "enrolled in the database only" if known_to_database else "unknown"
    return Tamper(f"row {at} re-signed with a key {where}", apply, at, "bad_signature", "untrusted key")


def _bad_signature(at: int) -> Tamper:
    async def apply(db: asyncpg.Connection, _: Chain) -> None:
        await db.execute("UPDATE audit_logs SET signature = decode(repeat('ab', 64), 'hex') WHERE chain_seq = $1", at)

    return Tamper(f"signature of row {at} replaced", apply, at, "bad_signature", "does not verify")


# --- strategies: positions biased to range edges, the first row and the head -------------------------------

def _positions(low: int = 1, high: int = ROWS) -> st.SearchStrategy[int]:
    edges = sorted({p for k in range(0, ROWS // RANGE + 1) for p in (k * RANGE, k * RANGE + 1) if low <= p <= high})
    return st.one_of(st.sampled_from([low, high]), st.sampled_from(edges), st.integers(low, high))


@st.composite
def _deletions(draw: st.DrawFn) -> Tamper:
    first = draw(_positions())
    length = draw(st.one_of(
        st.sampled_from([1, 2, RANGE - 1, RANGE, RANGE + 1, 2 * RANGE, 3 * RANGE + 7]), st.integers(1, 600),
    ))
    return _delete(first, min(ROWS, first + length - 1))


@st.composite
def _swaps(draw: st.DrawFn) -> Tamper:
    a = draw(_positions(1, ROWS - 1))
    b = draw(st.one_of(st.just(a + 1), _positions(a + 1, ROWS)))
    return _swap(a, b)


@st.composite
def _edits(draw: st.DrawFn) -> Tamper:
    return _edit(draw(st.sampled_from(HASHED_COLUMNS)), draw(_positions()))


TAMPERS = st.one_of(
    _deletions(),
    _positions(0, ROWS - 1).map(_cut_tail),
    _positions(0, ROWS - 1).map(_rewind_head),
    _positions(1, ROWS + 1).map(_insert),
    _swaps(),
    _edits(),
    st.builds(_resign, _positions(), known_to_database=st.booleans()),
    _positions().map(_bad_signature),
)


@settings(max_examples=60, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(tamper=TAMPERS)
def test_every_tampering_is_caught_and_named(chain: Chain, tamper: Tamper) -> None:
    breaks = asyncio.run(_run(chain, tamper))
    assert [(b.chain_seq, b.kind) for b in breaks] == [(tamper.seq, tamper.kind)], (tamper, breaks)
    assert tamper.detail in breaks[0].detail, breaks


@pytest.mark.parametrize("column", HASHED_COLUMNS)
def test_an_edit_of_every_hashed_column_is_caught(chain: Chain, column: str) -> None:
    for at in (1, RANGE, RANGE + 1):  # early rows: verify stops at the break, so this stays quick
        tamper = _edit(column, at)
        breaks = asyncio.run(_run(chain, tamper))
        assert [(b.chain_seq, b.kind) for b in breaks] == [(tamper.seq, tamper.kind)], (tamper, breaks)


def test_the_untouched_chain_holds(chain: Chain) -> None:
    async def nothing(db: asyncpg.Connection, _: Chain) -> None:
        return None

    assert asyncio.run(_run(chain, Tamper("nothing", nothing, 0, ""))) == []
