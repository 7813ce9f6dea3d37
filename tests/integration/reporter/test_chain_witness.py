"""The reporter's chain check on tampered chains (always a status, never a crash), and the witness entry its
proof and chain-status answers name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from services.reporter import chainstatus
from services.signer.publisher import publish_pending
from shared.witness import DirectoryWitness
from tests.conftest import Infra, Topics
from tests.integration.reporter.conftest import Reporter, started
from tests.integration.reporter.scenario import TENANT_A, seed

API = "/api/v1"


@pytest.fixture
async def witnessed_reporter(database_url: str, topics: Topics, infra: Infra, tmp_path: Path) -> AsyncIterator[Reporter]:
    async for running in started(database_url, topics, infra.bootstrap, checkpoint_witness_dir=str(tmp_path / "witness")):
        yield running


async def _status(reporter: Reporter) -> dict[str, object]:
    response = await reporter.client.get(f"{API}/audit/verify", headers=reporter.tenant_a)
    assert response.status_code == 200, response.text
    tenants: list[dict[str, object]] = response.json()["tenants"]
    return tenants[0]


async def test_proof_and_status_name_the_witness_entry_covering_a_row(
    witnessed_reporter: Reporter, db: asyncpg.Connection, tmp_path: Path
) -> None:
    reporter = witnessed_reporter
    scenario = await seed(db)
    first_id = await db.fetchval("SELECT id FROM audit_logs WHERE tenant_id = $1 AND chain_seq = 1", TENANT_A)
    response = await reporter.client.get(f"{API}/audit/records/{first_id}/proof", headers=reporter.tenant_a)
    assert response.status_code == 200, response.text
    before = response.json()
    covering = await db.fetchval("SELECT min(chain_seq) FROM chain_checkpoints WHERE tenant_id = $1", TENANT_A)
    assert before["witness"]["status"] == "awaiting_publication" and before["witness"]["checkpoint_seq"] == covering

    witness = DirectoryWitness(tmp_path / "witness")
    await publish_pending(db, witness)
    proof = (await reporter.client.get(f"{API}/audit/records/{first_id}/proof", headers=reporter.tenant_a)).json()
    entry = proof["witness"]
    assert entry["status"] == "published" and entry["checkpoint_seq"] == covering
    assert entry["location"] == f"{tmp_path / 'witness' / 'checkpoints' / TENANT_A}.jsonl#chain_seq={covering}"
    assert entry["witness"] == witness.description
    # The entry is there, at that place, with the head hash the rows lead to.
    records = {r["chain_seq"]: r for r in witness.checkpoint_records() if r["tenant_id"] == TENANT_A}
    assert records[covering]["head_hash"] == bytes(await db.fetchval(
        "SELECT row_hash FROM audit_logs WHERE tenant_id = $1 AND chain_seq = $2", TENANT_A, covering)).hex()

    book = await chainstatus.key_book(db)
    await chainstatus.advance(db, TENANT_A, book, 1000, scenario.start, rescan_rows=1000)
    status = await _status(reporter)
    assert status["status"] == "ok"
    published = max(records)
    assert status["witness"]["published_through_seq"] == published  # type: ignore[index]
    assert status["witness"]["status"] in ("published", "not_checkpointed_yet")  # type: ignore[index]


Tamper = Callable[[asyncpg.Connection], Awaitable[object]]


async def _rewind_head(db: asyncpg.Connection, to: int) -> None:
    head = await db.fetchval("SELECT row_hash FROM audit_logs WHERE tenant_id = $1 AND chain_seq = $2", TENANT_A, to)
    await db.execute("UPDATE chain_heads SET head_seq = $2, head_hash = $3 WHERE tenant_id = $1", TENANT_A, to, head)


async def _cut_tail(db: asyncpg.Connection, keep: int) -> None:
    await db.execute("DELETE FROM audit_logs WHERE tenant_id = $1 AND chain_seq > $2", TENANT_A, keep)
    await _rewind_head(db, keep)


CASES: list[tuple[str, Tamper, bool, int, str]] = [
    # name, tampering, done after a first full check?, sequence number, kind
    ("a whole range deleted", lambda db: db.execute(
        "DELETE FROM audit_logs WHERE tenant_id = $1 AND chain_seq BETWEEN 4 AND 6", TENANT_A), False, 4, "deleted"),
    ("the first row deleted", lambda db: db.execute(
        "DELETE FROM audit_logs WHERE tenant_id = $1 AND chain_seq = 1", TENANT_A), False, 1, "deleted"),
    ("the first row deleted after it was checked", lambda db: db.execute(
        "DELETE FROM audit_logs WHERE tenant_id = $1 AND chain_seq = 1", TENANT_A), True, 1, "deleted"),
    ("the head row deleted", lambda db: db.execute(
        "DELETE FROM audit_logs WHERE tenant_id = $1 AND chain_seq = 12", TENANT_A), False, 12, "deleted"),
    ("the head rewound", lambda db: _rewind_head(db, 9), False, 10, "head_mismatch"),
    ("the head rewound after the rows were checked", lambda db: _rewind_head(db, 9), True, 10, "head_mismatch"),
    ("the tail cut and the head rewound after a check", lambda db: _cut_tail(db, 8), True, 9, "truncated"),
]


@pytest.mark.parametrize(("case", "tamper", "after_check", "seq", "kind"), CASES, ids=[c[0] for c in CASES])
async def test_a_broken_chain_is_reported_broken(
    reporter: Reporter, db: asyncpg.Connection, case: str, tamper: Tamper, after_check: bool, seq: int, kind: str
) -> None:
    scenario = await seed(db)
    book = await chainstatus.key_book(db)
    if after_check:
        result = await chainstatus.advance(db, TENANT_A, book, 1000, scenario.start, rescan_rows=1000)
        assert result is not None and result.status == "ok"
    await tamper(db)
    for _ in range(6):  # passes of 3 rows: the break falls on and between pass edges
        await chainstatus.advance(db, TENANT_A, book, 3, scenario.start, rescan_rows=3)
    status = await _status(reporter)
    assert status["status"] == "broken", status
    assert (status["break"]["seq"], status["break"]["kind"]) == (seq, kind), status  # type: ignore[index]
