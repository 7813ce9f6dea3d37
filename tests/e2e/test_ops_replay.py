"""Replay and restore, with the real services: after a redaction bug, and after PostgreSQL is restored from
a backup, every event a client got a 200 for is chained exactly once and every chain verifies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from services.auditctl.ops.reader import TopicReader
from shared.db.pool import connect
from tests.conftest import Infra, Topics
from tests.e2e.harness import Pipeline
from tests.e2e.ops_support import (
    CAPTURES,
    all_chains_verify,
    auditctl,
    chained_ids,
    event_ids,
    json_lines,
    pg_tool,
    run_tool,
    send,
)

TENANT, ORG = "tenant-acme", "acme"


async def test_replay_after_a_redaction_bug_fills_the_gap_and_a_second_replay_adds_nothing(
        infra: Infra, database_url: str, topics: Topics, tmp_path: Path, fixtures_dir: Path) -> None:
    # The "bug": the redactor drops housekeeping events, so those records never became rows.
    pipe = Pipeline(database_url, infra.bootstrap, topics, tmp_path, extra_env={"OTHER_EVENT_POLICY": "drop"})
    pipe.start()
    try:
        window_start = datetime.now(UTC) - timedelta(seconds=5)
        token = await pipe.licence(ORG, tenant=TENANT)
        await send(pipe, fixtures_dir, CAPTURES, ORG, token)
        kept_by_bug = event_ids(fixtures_dir, CAPTURES, TENANT, ORG, other_event_policy="drop")
        everything = event_ids(fixtures_dir, CAPTURES, TENANT, ORG)
        assert kept_by_bug < everything
        await pipe.wait_for_rows(len(kept_by_bug))
        # The ids the replay computes are exactly the ids the running redactor produced.
        assert set(await chained_ids(database_url)) == kept_by_bug

        # The fix is deployed: the redactor restarts with the right policy; the replay uses the same settings.
        assert pipe.group is not None
        fixed_env = {**pipe.env(), "OTHER_EVENT_POLICY": "keep"}
        pipe.group.stop("redactor")
        pipe.group.env = fixed_env
        pipe.group.start("redactor")

        dry = auditctl(fixed_env, "replay", "--from", window_start.isoformat(), "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        plan = json_lines(dry.stdout)["plan"]
        assert plan["messages"] >= len(CAPTURES) and plan["estimated_records"] > 0
        assert await chained_ids(database_url) and len(await chained_ids(database_url)) == len(kept_by_bug)

        first = auditctl(fixed_env, "replay", "--from", window_start.isoformat(), "--wait", "60", "--json")
        assert first.returncode == 0, first.stdout + first.stderr + pipe.log_of("redactor")[-2000:]
        summary = json_lines(first.stdout)["summary"]
        assert summary["replayed_events"] == len(everything - kept_by_bug)
        assert summary["skipped_duplicate_events"] == len(kept_by_bug)
        assert summary["confirmed_events"] == summary["replayed_events"]
        assert summary["dead_lettered"] == 0
        rows = await chained_ids(database_url)
        assert len(rows) == len(everything) and set(rows) == everything

        second = auditctl(fixed_env, "replay", "--from", window_start.isoformat(), "--wait", "10", "--json")
        assert second.returncode == 0, second.stdout + second.stderr
        summary = json_lines(second.stdout)["summary"]
        assert summary["replayed_events"] == 0
        assert summary["skipped_duplicate_events"] == len(everything)
        assert await chained_ids(database_url) == rows  # same rows, same order: no duplicate, no fork
        assert await all_chains_verify(database_url)
        verify = auditctl(fixed_env, "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        pipe.stop()


async def _restore(server_dsn: str, database_url: str, dump: Path) -> None:
    """Replace the test database by the backup, as an operator restoring PostgreSQL would."""
    conn = await asyncpg.connect(database_url)
    try:
        name = await conn.fetchval("SELECT current_database()")
    finally:
        await conn.close()
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        await conn.execute(f'DROP DATABASE "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    restore = pg_tool("pg_restore")
    assert restore is not None
    run_tool(restore, "--no-owner", f"--dbname={database_url}", str(dump))


async def _backed_up_then_restored(infra: Infra, database_url: str, pipe: Pipeline, fixtures_dir: Path,
                                   tmp_path: Path) -> tuple[set[str], set[str]]:
    """Ingest A, back up, ingest B (acknowledged), stop, restore the backup: B's rows are gone."""
    dump_tool = pg_tool("pg_dump")
    if dump_tool is None or pg_tool("pg_restore") is None:
        pytest.skip("no pg_dump/pg_restore for this PostgreSQL")
    token = await pipe.licence(ORG, tenant=TENANT)
    before, after = CAPTURES[:2], CAPTURES[2:]
    ids_before = event_ids(fixtures_dir, before, TENANT, ORG)
    ids_after = event_ids(fixtures_dir, after, TENANT, ORG) - ids_before
    await send(pipe, fixtures_dir, before, ORG, token)
    await pipe.wait_for_rows(len(ids_before))
    dump = tmp_path / "backup.dump"
    run_tool(dump_tool, "--format=custom", f"--file={dump}", f"--dbname={database_url}")
    await send(pipe, fixtures_dir, after, ORG, token)  # every one answered 200: acknowledged
    await pipe.wait_for_rows(len(ids_before | ids_after))
    pipe.stop()
    await _restore(infra.server_dsn, database_url, dump)
    assert set(await chained_ids(database_url)) == ids_before
    return ids_before, ids_after


async def test_after_a_restore_the_signer_resumes_from_its_stored_offsets(
        infra: Infra, database_url: str, topics: Topics, tmp_path: Path, fixtures_dir: Path) -> None:
    pipe = Pipeline(database_url, infra.bootstrap, topics, tmp_path)
    pipe.start()
    try:
        window_start = datetime.now(UTC) - timedelta(seconds=5)
        ids_before, ids_after = await _backed_up_then_restored(infra, database_url, pipe, fixtures_dir, tmp_path)
        acknowledged = ids_before | ids_after
        # The restored signer_offsets point before B's canonical events: the signer reads them again.
        pipe.start()
        await pipe.wait_for_rows(len(acknowledged))
        rows = await chained_ids(database_url)
        assert set(rows) == acknowledged and len(rows) == len(acknowledged)
        assert await all_chains_verify(database_url)
        # A replay of the whole window on top finds nothing missing.
        result = auditctl(pipe.env(), "replay", "--from", window_start.isoformat(), "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        summary = json_lines(result.stdout)["summary"]
        assert summary["replayed_events"] == 0 and summary["skipped_duplicate_events"] == len(acknowledged)
    finally:
        pipe.stop()


async def test_after_a_restore_beyond_canonical_retention_a_replay_from_raw_recovers_every_event(
        infra: Infra, database_url: str, topics: Topics, tmp_path: Path, fixtures_dir: Path) -> None:
    pipe = Pipeline(database_url, infra.bootstrap, topics, tmp_path)
    pipe.start()
    try:
        window_start = datetime.now(UTC) - timedelta(seconds=5)
        ids_before, ids_after = await _backed_up_then_restored(infra, database_url, pipe, fixtures_dir, tmp_path)
        # The canonical topic no longer holds B's events (retention): the signer has nothing to re-read.
        # Simulated by moving its stored offsets to the canonical topic's end.
        async with TopicReader(infra.bootstrap) as reader:
            ends = await reader.bounds(topics.canonical, await reader.partitions(topics.canonical))
        conn = await connect(database_url)
        try:
            group = pipe.env()["SIGNER_GROUP_ID"]
            await conn.executemany(
                "INSERT INTO signer_offsets (consumer_group, topic, partition, next_offset) VALUES ($1,$2,$3,$4)"
                " ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                [(group, topics.canonical, p, end) for p, (_, end) in ends.items()])
        finally:
            await conn.close()
        pipe.start()
        result = auditctl(pipe.env(), "replay", "--from", window_start.isoformat(), "--tenant", TENANT,
                          "--wait", "60", "--json")
        assert result.returncode == 0, result.stdout + result.stderr + pipe.log_of("signer")[-2000:]
        summary = json_lines(result.stdout)["summary"]
        # A redactor stopped before it committed its last raw offsets emits those batches again when it starts
        # (at least once), so the signer may chain some of B's events before the replay reads the window; the
        # replay then skips them as duplicates. Either way every acknowledged event ends up chained exactly once.
        assert summary["replayed_events"] + summary["skipped_duplicate_events"] == len(ids_before | ids_after)
        assert summary["skipped_duplicate_events"] >= len(ids_before)
        rows = await chained_ids(database_url)
        assert set(rows) == ids_before | ids_after and len(rows) == len(ids_before | ids_after)
        assert await all_chains_verify(database_url)
    finally:
        pipe.stop()
