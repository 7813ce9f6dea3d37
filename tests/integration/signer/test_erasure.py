"""Erasure on real PostgreSQL: rows are written as hash version 2, an erasure event is chained like any
event, content is deleted after it, and verify counts the erased rows; content removed without its erasure
event, or changed, is a break."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from services.auditctl.erase import Selector, delete_content, select_rows
from services.reporter import chainstatus, queries
from services.signer.appender import OffsetEvent, append_batch
from services.signer.rows import JSON_COLUMNS
from shared.canonical import EVENT_COLUMNS
from shared.chain import GENESIS_HASH, as_stored, canonical_bytes, content_digest, row_hash
from shared.enrollment import record_signing_key
from shared.erasure import ErasureRequest, erasure_events
from shared.keys import Ed25519Signer
from shared.merkle import Frontier
from shared.verify import TenantReport, load_key_book, unrecorded_erasure, verify_tenant
from tests.integration.signer.test_append import event

ROWS = 8


async def _chain(db: asyncpg.Connection, key: Ed25519Signer) -> None:
    await record_signing_key(db, key.public_key)
    await append_batch(db, key, group="g", topic="c", partition=0,
                       batch=[OffsetEvent(i, event(i)) for i in range(ROWS)])


async def _verify(db: asyncpg.Connection) -> TenantReport:
    return await verify_tenant(db, "t1", await load_key_book(db))


async def _erase(db: asyncpg.Connection, key: Ed25519Signer, selector: Selector, offset: int) -> int:
    """What ``auditctl erase`` does, with the signer's own append standing in for the trip through Kafka
    (tests/e2e/test_erasure.py takes that trip)."""
    selection = await select_rows(db, selector)
    events = []
    for (tenant, org), rows in selection.erasable.items():
        request = ErasureRequest(tenant, org, "alice", "GDPR request 41", selector.describe(), "req-1")
        events.extend(erasure_events(request, rows, datetime.now(UTC)))
    await append_batch(db, key, group="g", topic="c", partition=0,
                       batch=[OffsetEvent(offset + i, e) for i, e in enumerate(events)])
    return await delete_content(db, events, "GDPR request 41", "alice")


async def test_rows_are_written_as_version_2_with_their_content_apart(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await _chain(db, signing_key)
    rows = await db.fetch(
        "SELECT a.hash_version, a.content AS in_row, a.content_digest, c.salt, c.content FROM audit_logs a"
        " JOIN audit_content c USING (tenant_id, chain_seq) ORDER BY a.chain_seq")
    assert len(rows) == ROWS
    assert {r["hash_version"] for r in rows} == {2}
    assert all(r["in_row"] == {} and r["content"] == {"prompt": "hi <EMAIL>"} for r in rows)
    assert all(bytes(r["content_digest"]) == content_digest(bytes(r["salt"]), r["content"]) for r in rows)
    assert len({bytes(r["salt"]) for r in rows}) == ROWS  # a salt of its own per row
    report = await _verify(db)
    assert report.ok and report.rows == ROWS and report.erased == 0


async def test_erase_by_event_keeps_the_chain_and_is_counted(db: asyncpg.Connection, signing_key: Ed25519Signer) -> None:
    await _chain(db, signing_key)
    deleted = await _erase(db, signing_key, Selector(event_ids=("t1-ev-2",)), ROWS)
    assert deleted == 1
    assert await db.fetchval("SELECT count(*) FROM audit_content WHERE chain_seq = 3") == 0
    assert await db.fetchval("SELECT content_digest IS NOT NULL FROM audit_logs WHERE chain_seq = 3")
    erasure = await db.fetchrow("SELECT * FROM audit_logs WHERE plane = 'erasure'")
    assert erasure["chain_seq"] == ROWS + 1 and erasure["user_id"] == "alice"
    assert erasure["attributes"]["erasure.rows"] == [3]
    assert erasure["attributes"]["erasure.event_ids"] == ["t1-ev-2"]
    assert erasure["attributes"]["erasure.reason"] == "GDPR request 41"
    report = await _verify(db)
    assert report.ok, report.breaks
    assert (report.rows, report.erased) == (ROWS + 1, 1)
    # Erasing again finds nothing left to erase.
    again = await select_rows(db, Selector(event_ids=("t1-ev-2",)))
    assert (again.rows, again.already_erased) == (0, 1)

    # The reporter shows the erasure where the content was.
    items, _ = await queries.feed(db, "t1", queries.FeedFilters(event_type="api_request"), None, 50)
    erased = next(i for i in items if i["event_id"] == "t1-ev-2")
    kept = next(i for i in items if i["event_id"] == "t1-ev-3")
    assert erased["content"] is None
    assert erased["erasure"]["text"].startswith("erased on 20") and "(GDPR request 41)" in erased["erasure"]["text"]
    assert kept["content"] == {"prompt": "hi <EMAIL>"} and kept["erasure"] is None


async def test_erase_by_user_session_and_time_range(db: asyncpg.Connection, signing_key: Ed25519Signer) -> None:
    await _chain(db, signing_key)
    first = event(0).event_time
    selector = Selector(tenant="t1", session="s1", since=first, until=first.replace(second=first.second + 3))
    assert await _erase(db, signing_key, selector, ROWS) == 3
    report = await _verify(db)
    assert report.ok and report.erased == 3
    with pytest.raises(ValueError, match="need --tenant"):
        await select_rows(db, Selector(user="u1"))


@pytest.mark.parametrize("range_rows", [5_000, 2])
async def test_content_deleted_without_its_erasure_event_is_a_break(
    db: asyncpg.Connection, signing_key: Ed25519Signer, range_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With ranges of 2 rows, the erased rows and the erasure event are checked in different ranges.
    monkeypatch.setattr("shared.verify.RANGE_ROWS", range_rows)
    await _chain(db, signing_key)
    assert (await _verify(db)).ok
    await _erase(db, signing_key, Selector(event_ids=("t1-ev-1",)), ROWS)
    assert (await _verify(db)).erased == 1
    await db.execute("DELETE FROM audit_content WHERE chain_seq = 5")  # behind the pipeline's back
    report = await _verify(db)
    assert [(b.chain_seq, b.kind) for b in report.breaks] == [(5, "unrecorded_erasure")]


async def test_an_erasure_event_does_not_cover_rows_after_it(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await _chain(db, signing_key)
    await _erase(db, signing_key, Selector(event_ids=("t1-ev-1",)), ROWS)
    # Later rows, then one of them erased by hand: the earlier erasure event cannot vouch for it, even if it
    # had listed that sequence number.
    await append_batch(db, signing_key, group="g", topic="c", partition=0,
                       batch=[OffsetEvent(ROWS + 1, event(100))])
    await db.execute("DELETE FROM audit_content WHERE chain_seq = $1", ROWS + 2)
    report = await _verify(db)
    assert [(b.chain_seq, b.kind) for b in report.breaks] == [(ROWS + 2, "unrecorded_erasure")]


async def test_content_changed_or_put_back_into_the_row_is_modified(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await _chain(db, signing_key)
    await db.execute("SET session_replication_role = origin")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("UPDATE audit_content SET content = '{\"prompt\": \"other\"}' WHERE chain_seq = 2")
    # A superuser can switch the triggers off; verification still sees it.
    await db.execute("SET session_replication_role = replica")
    await db.execute("UPDATE audit_content SET content = '{\"prompt\": \"other\"}' WHERE chain_seq = 2")
    await db.execute("UPDATE audit_logs SET content = '{\"prompt\": \"smuggled\"}' WHERE chain_seq = 4")
    report = await _verify(db)
    assert [(b.chain_seq, b.kind) for b in report.breaks] == [(2, "modified")]
    assert "content_digest" in report.breaks[0].detail
    await db.execute("UPDATE audit_content SET content = '{\"prompt\": \"hi <EMAIL>\"}' WHERE chain_seq = 2")
    report = await _verify(db)
    assert [(b.chain_seq, b.kind) for b in report.breaks] == [(4, "modified")]


async def test_the_reporters_chain_check_finds_a_forged_erasure_too(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await _chain(db, signing_key)
    await _erase(db, signing_key, Selector(event_ids=("t1-ev-1",)), ROWS)
    book = await chainstatus.key_book(db)
    now = datetime.now(UTC)
    assert (await chainstatus.advance(db, "t1", book, 1000, now, rescan_rows=1000)).status == "ok"  # type: ignore[union-attr]
    assert await unrecorded_erasure(db, "t1", ROWS + 1) is None
    await db.execute("DELETE FROM audit_content WHERE chain_seq = 6")
    assert (await chainstatus.advance(db, "t1", book, 1000, now, rescan_rows=1000)).status == "broken"  # type: ignore[union-attr]
    status = await db.fetchrow("SELECT break_seq, break_kind FROM report_chain_status WHERE tenant_id = 't1'")
    assert (status["break_seq"], status["break_kind"]) == (6, "unrecorded_erasure")


async def test_a_chain_begun_in_version_1_goes_on_in_version_2_and_verifies(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    """Rows signed before version 2 existed keep verifying, and the signer chains version 2 rows onto them."""
    await record_signing_key(db, signing_key.public_key)
    await db.execute("INSERT INTO key_activations (tenant_id, from_seq, key_id) VALUES ('t1', 1, $1)",
                     signing_key.key_id)
    prev, tree = GENESIS_HASH, Frontier()
    for seq in (1, 2, 3):
        values = as_stored({c: getattr(event(seq - 1), c) for c in EVENT_COLUMNS}, JSON_COLUMNS)
        values.update(chain_seq=seq, signing_key_id=signing_key.key_id, hash_version=1)
        digest = row_hash(prev, canonical_bytes(values))  # version 1: the content is in the hashed bytes
        columns = [*values, "prev_hash", "row_hash", "signature"]
        await db.execute(
            f"INSERT INTO audit_logs ({', '.join(columns)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})",
            *values.values(), prev, digest, signing_key.sign(digest))
        tree, completed = tree.append(digest)
        await db.execute("INSERT INTO merkle_subtrees (tenant_id, leaf_index, hashes) VALUES ('t1', $1, $2)",
                         seq - 1, completed)
        prev = digest
    await db.execute("INSERT INTO chain_heads (tenant_id, head_seq, head_hash, key_id, merkle_frontier)"
                     " VALUES ('t1', 3, $1, $2, $3)", prev, signing_key.key_id, tree.to_bytes())
    await append_batch(db, signing_key, group="g", topic="c", partition=0,
                       batch=[OffsetEvent(i, event(i)) for i in range(3, 6)])
    versions = [r["hash_version"] for r in await db.fetch("SELECT hash_version FROM audit_logs ORDER BY chain_seq")]
    assert versions == [1, 1, 1, 2, 2, 2]
    report = await _verify(db)
    assert report.ok and report.rows == 6, report.breaks
    # Version 1 content is inside the signed bytes: it cannot be erased, and erase says so.
    selection = await select_rows(db, Selector(tenant="t1", session="s1"))
    assert (selection.version_1, selection.rows) == (3, 3)
