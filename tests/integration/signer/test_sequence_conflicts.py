"""Event ids bind content: a different event claiming a session and sequence already taken is kept, and
every row of that session and sequence is flagged ``sequence_conflict``. Nothing is dropped silently."""

from __future__ import annotations

import dataclasses

import asyncpg
import pytest

from services.signer.appender import Head, OffsetEvent, append_batch, append_prepared, prepare
from services.signer.rows import ChainRow
from shared import verify
from shared.canonical import CanonicalEvent
from shared.db.roles import COMPONENT_ROLES, dsn_for_role
from shared.enrollment import record_signing_key
from shared.keys import Ed25519Signer
from shared.verify import load_key_book, published_keys, verify_tenant
from tests.integration.signer.test_append import event


def forged(n: int) -> CanonicalEvent:
    """Another event that claims the session and sequence of ``event(n)``: its content differs, so its id."""
    return dataclasses.replace(event(n), event_id=f"t1-forged-{n}", event_type="tool_decision", decision="accept",
                               tool_name="Bash")


async def _append(db: asyncpg.Connection, key: Ed25519Signer, items: list[OffsetEvent]):  # type: ignore[no-untyped-def]
    return await append_batch(db, key, group="g", topic="c", partition=0, batch=items)


async def _flags(db: asyncpg.Connection) -> dict[str, bool]:
    rows = await db.fetch("SELECT event_id, sequence_conflict FROM audit_logs ORDER BY chain_seq")
    return {row["event_id"]: row["sequence_conflict"] for row in rows}


async def test_a_second_event_on_a_taken_sequence_is_kept_and_both_are_flagged(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    await _append(db, signing_key, [OffsetEvent(i - 1, event(i)) for i in range(1, 4)])
    result = await _append(db, signing_key, [OffsetEvent(3, forged(2)), OffsetEvent(4, event(4))])
    assert result.appended == 2
    assert sorted(c[3] for c in result.conflicts) == ["t1-ev-2", "t1-forged-2"]
    assert {(c[0], c[1], c[2]) for c in result.conflicts} == {("t1", "s1", 2)}
    assert await _flags(db) == {"t1-ev-1": False, "t1-ev-2": True, "t1-ev-3": False, "t1-forged-2": True,
                                "t1-ev-4": False}
    # The flag is not hashed: the chain, with rows flagged after they were chained, still verifies.
    report = await verify_tenant(db, "t1", await published_keys(db))
    assert report.ok and report.rows == 5, report.breaks


async def test_a_retry_of_the_same_event_is_a_duplicate_not_a_conflict(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    await _append(db, signing_key, [OffsetEvent(0, event(1))])
    result = await _append(db, signing_key, [OffsetEvent(1, event(1))])
    assert (result.appended, result.duplicates, result.conflicts) == (0, 1, ())
    assert await _flags(db) == {"t1-ev-1": False}


async def test_conflicts_within_one_batch_and_on_the_prepared_path_are_flagged(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    heads: dict[str, Head] = {}
    batch = [OffsetEvent(0, ChainRow.of(event(1))), OffsetEvent(1, ChainRow.of(forged(1))),
             OffsetEvent(2, ChainRow.of(event(2)))]
    prepared = await prepare(db, signing_key, batch, heads)
    result = await append_prepared(db, signing_key, prepared, group="g", topic="c", partition=0)
    assert result.as_prepared and len(result.conflicts) == 2
    assert await _flags(db) == {"t1-ev-1": True, "t1-forged-1": True, "t1-ev-2": False}
    # A third claimant later: flagged too; the two already flagged are not reported again.
    third = dataclasses.replace(forged(1), event_id="t1-third-1")
    later = await _append(db, signing_key, [OffsetEvent(3, ChainRow.of(third))])
    assert [c[3] for c in later.conflicts] == ["t1-third-1"]


async def test_events_without_a_session_sequence_never_conflict(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    plain = [dataclasses.replace(event(i), event_id=f"t1-plain-{i}", event_sequence=None) for i in range(3)]
    result = await _append(db, signing_key, [OffsetEvent(i, e) for i, e in enumerate(plain)])
    assert result.appended == 3 and result.conflicts == ()


async def test_the_reporter_shows_the_conflict_in_the_feed_and_the_session(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    from services.reporter import queries  # noqa: PLC0415 - the reporter's reading of the same rows

    await record_signing_key(db, signing_key.public_key)
    await _append(db, signing_key, [OffsetEvent(i - 1, event(i)) for i in range(1, 4)])
    await _append(db, signing_key, [OffsetEvent(3, forged(2))])
    summary = await queries.session_summary(db, "t1", "s1")
    assert summary is not None
    (group,) = summary["sequence_conflicts"]
    assert group["sequence"] == 2 and {e["event_id"] for e in group["events"]} == {"t1-ev-2", "t1-forged-2"}
    assert not summary["truncated"]["sequence_conflicts"]
    columns = ", ".join(queries._FEED_COLUMNS)  # what the feed selects
    rows = await db.fetch(f"SELECT {columns} FROM audit_logs ORDER BY chain_seq")
    assert {queries.feed_item(row)["event_id"] for row in rows if queries.feed_item(row)["sequence_conflict"]} == {
        "t1-ev-2", "t1-forged-2"}


async def test_verify_reports_a_conflict_flag_altered_either_way(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    await _append(db, signing_key, [OffsetEvent(i - 1, event(i)) for i in range(1, 4)])
    await _append(db, signing_key, [OffsetEvent(3, forged(2))])
    # A superuser (past any trigger) hides the conflict: the flag is not hashed, but it is derived, so it shows.
    await db.execute("SET session_replication_role = replica")
    await db.execute("UPDATE audit_logs SET sequence_conflict = false WHERE event_id = 't1-forged-2'")
    report = await verify_tenant(db, "t1", await published_keys(db))
    assert [(b.chain_seq, b.kind) for b in report.breaks] == [(4, "modified")]
    assert "sequence_conflict" in report.breaks[0].detail
    await db.execute("UPDATE audit_logs SET sequence_conflict = (event_sequence = 2)")
    assert (await verify_tenant(db, "t1", await published_keys(db))).ok
    await db.execute("UPDATE audit_logs SET sequence_conflict = true WHERE event_id = 't1-ev-3'")  # a false alarm
    report = await verify_tenant(db, "t1", await published_keys(db))
    assert [(b.chain_seq, b.kind) for b in report.breaks] == [(3, "modified")]


async def test_verify_in_worker_processes_reports_an_altered_conflict_flag(
    db: asyncpg.Connection, database_url: str, signing_key: Ed25519Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ranges checked by worker processes, the flags are checked on the caller's connection meanwhile."""
    monkeypatch.setattr(verify, "RANGE_ROWS", 2)
    await record_signing_key(db, signing_key.public_key)
    await _append(db, signing_key, [OffsetEvent(i - 1, event(i)) for i in range(1, 6)])
    (report,) = await verify.verify_tenants(db, ["t1"], await load_key_book(db), dsn=database_url, workers=2)
    assert report.ok and report.rows == 5, report.breaks
    await db.execute("SET session_replication_role = replica")
    await db.execute("UPDATE audit_logs SET sequence_conflict = true WHERE chain_seq = 4")
    (report,) = await verify.verify_tenants(db, ["t1"], await load_key_book(db), dsn=database_url, workers=2)
    assert [(b.chain_seq, b.kind) for b in report.breaks] == [(4, "modified")]


async def test_only_the_flag_may_change_and_only_to_true_whoever_asks(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    await _append(db, signing_key, [OffsetEvent(0, event(1))])
    await db.execute("SET session_replication_role = origin")  # the triggers on, as for every service
    await db.execute("UPDATE audit_logs SET sequence_conflict = true")  # what the signer does
    for statement in ("UPDATE audit_logs SET sequence_conflict = false",
                      "UPDATE audit_logs SET input_tokens = 1, sequence_conflict = true",
                      "UPDATE audit_logs SET cost = 0 WHERE false"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db.execute(statement)


async def test_the_signer_role_may_flag_and_no_other_role_may(
    database_url: str, db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    await _append(db, signing_key, [OffsetEvent(0, event(1))])
    for role in COMPONENT_ROLES:
        conn = await asyncpg.connect(dsn_for_role(database_url, role))
        try:
            statement = "UPDATE audit_logs SET sequence_conflict = true WHERE event_id = 't1-ev-1'"
            if role == "audit_signer":
                await conn.execute(statement)
            else:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        finally:
            await conn.close()
    assert await _flags(db) == {"t1-ev-1": True}
