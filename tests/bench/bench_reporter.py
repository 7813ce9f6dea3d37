"""Reporter benchmark: 1,000,000 audit rows, 1,000 users, 20,000 sessions; p50/p99 of the reporting API.

Usage: python -m tests.bench.bench_reporter [--rows 1000000] [--requests 200] [--json out.json]
(``make bench-reporter``)

1. A fresh database: a new embedded PostgreSQL in a temporary directory, or a new database on the server
   of DATABASE_URL when that is set. Migrations applied, so the indexes are the ones production has.
2. Seeding with one INSERT ... SELECT generate_series per 100,000 rows, into one tenant (the worst case:
   every query of that tenant faces all the rows). Thirty days of sessions, 50 events each, in Claude
   Code's mix (prompts, API requests, tool decisions with accepts and rejects, tool results, errors,
   assistant responses), 70% of users signed in with an e-mail. The rows are NOT chain-valid: hashes and
   signatures are placeholders (signing a million rows would measure the signer, not the reporter); the
   chain status of this tenant therefore reads "broken", which does not affect the measured queries.
3. The rollup backfill (the reporter's own fold, as it runs in production), timed, then VACUUM ANALYZE.
4. A real reporter process (Hypercorn, an auditor's reporting token, JSON) with a broker for its access
   trail (KAFKA_BOOTSTRAP_SERVERS, else an embedded one), and one closed-loop client measuring, per
   scenario, ``--requests`` sequential requests after a warm-up. The feed and session-summary answers
   disclose content, so each includes its access event being acknowledged by the broker:
   feed first page; feed at a deep cursor (a random position 100,000-900,000 rows down); a session
   summary (a random session); usage by user over 30 days (the default page: the top 100 users by cost,
   every one of the 1,000 aggregated). Also, for reference: all 1,000 users in one response, usage by day
   and by model, the feed filtered by user, by decision, by event type (a common and a rare one) and by
   tool (first page and deep cursor), the session list.
5. The plan of each query (which index or rollup it reads), from EXPLAIN.

Target: p99 < 100 ms for each of the four main scenarios; exit status 1 if one misses it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from deploy.local.infra import free_port, start_broker, start_postgres
from deploy.local.stack import ServiceGroup, wait_ready
from services.reporter import queries, usagesql
from services.reporter.params import Cursor
from services.reporter.rollup import catch_up
from shared.db.migrate import apply_migrations
from shared.db.pool import connect
from shared.kafka import TopicSpec, ensure_topics
from shared.keys import Ed25519Signer
from shared.messages.auth import provision_local_keys
from shared.reporting_tokens import AUDITOR, issue_token
from shared.usage_columns import DAILY_COLUMNS

TENANT, ORG = "bench-tenant", "bench-org"
USERS, SESSIONS, DAYS = 1_000, 20_000, 30
TARGET_P99_MS = 100.0
CHUNK = 100_000
# 50 events per session in Claude Code's mix: what each position k = 0..49 of a session is.
SESSION_SHAPE = (["user_prompt", "api_request", "tool_decision", "tool_result", "api_request",
                  "assistant_response"] * 8 + ["api_error", "user_prompt"])[:50]

SEED_SQL = """
INSERT INTO audit_logs (event_id, tenant_id, org_id, license_id, plane, event_type, session_id, correlation_id,
    event_sequence, event_time, received_at, user_email, user_id, service_name, service_version, model,
    input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, tokens_used, cost, duration_ms,
    decision, decision_source, tool_name, success, status_code, attempt, content, content_lengths,
    redacted_fields, content_captured, attributes, chain_seq, prev_hash, row_hash, signature, signing_key_id,
    hash_version)
SELECT 'bench-' || g, $1, $2, 'bench-licence',
       CASE WHEN s % 10 = 0 THEN 'cowork' ELSE 'claude_code' END,
       t, 'session-' || lpad(s::text, 5, '0'), 'prompt-' || s || '-' || (k / 6), k, at, at + interval '80 ms',
       CASE WHEN u % 10 < 7 THEN 'user-' || u || '@bench.example' END, 'device-' || lpad(u::text, 4, '0'),
       CASE WHEN s % 10 = 0 THEN 'cowork' ELSE 'claude-code' END, '2.1.332',
       CASE WHEN t IN ('api_request', 'api_error') THEN (ARRAY['claude-opus-5-5', 'claude-sonnet-5',
            'claude-haiku-5'])[1 + (s + k) % 3] END,
       CASE WHEN t = 'api_request' THEN 1000 + (g % 4000) END,
       CASE WHEN t = 'api_request' THEN 50 + (g % 900) END,
       CASE WHEN t = 'api_request' THEN (g % 3000) END,
       CASE WHEN t = 'api_request' THEN (g % 200) END,
       CASE WHEN t = 'api_request' THEN 1050 + (g % 4000) + (g % 900) + (g % 3000) + (g % 200) END,
       CASE WHEN t = 'api_request' THEN ((g % 20000) / 1000000.0)::numeric(20, 6) END,
       CASE WHEN t IN ('api_request', 'tool_result', 'api_error') THEN 5 + g % 3000 END,
       CASE WHEN t = 'tool_decision' THEN CASE WHEN (s + k) % 7 = 0 THEN 'reject' ELSE 'accept' END END,
       CASE WHEN t = 'tool_decision' THEN CASE WHEN (s + k) % 7 = 0 THEN 'user_reject' ELSE 'config' END END,
       CASE WHEN t IN ('tool_decision', 'tool_result') THEN (ARRAY['Bash', 'Edit', 'Read', 'Write',
            'Grep'])[1 + (s + k / 6) % 5] END,
       CASE WHEN t = 'tool_result' THEN (g % 13) <> 0 END,
       CASE WHEN t = 'api_error' THEN 529 END,
       CASE WHEN t = 'api_error' THEN 1 + g % 3 END,
       CASE WHEN t = 'user_prompt' THEN jsonb_build_object('prompt', 'refactor module ' || g || ' and mail <EMAIL>')
            WHEN t = 'api_error' THEN jsonb_build_object('error', 'overloaded')
            ELSE '{}'::jsonb END,
       CASE WHEN t = 'user_prompt' THEN '{"prompt": 48}'::jsonb ELSE '{}'::jsonb END,
       CASE WHEN t = 'user_prompt' THEN '{"prompt": {"EMAIL": 1}}'::jsonb ELSE '{}'::jsonb END,
       t IN ('user_prompt', 'api_error'),
       '{"terminal.type": "xterm"}'::jsonb,
       g + 1, $3, $3, $4, 'bench-key', 1
FROM generate_series($5::bigint, $6::bigint - 1) AS g,
     LATERAL (SELECT g / 50 AS s, (g % 50)::int AS k) AS p,
     LATERAL (SELECT p.s % $7 AS u, ($8::text[])[p.k + 1] AS t,
                     $9::timestamptz + (p.s * ($10::float8 / $11)) * interval '1 second'
                         + p.k * interval '61 seconds' AS at) AS x
"""


METRICS_SQL = """
INSERT INTO report_usage_daily (tenant_id, day, user_key, session_id, m_points, m_cost, m_input_tokens,
    m_output_tokens, m_cache_read_tokens, m_cache_creation_tokens, m_sessions_started, m_lines_added, m_lines_removed,
    m_commits, m_pull_requests, m_edit_accepts, m_edit_rejects, m_active_user_seconds, m_active_cli_seconds)
SELECT $1, (at AT TIME ZONE 'UTC')::date,
       CASE WHEN s % $5 % 10 < 7 THEN 'user-' || (s % $5) || '@bench.example'
            ELSE 'device-' || lpad((s % $5)::text, 4, '0') END,
       'session-' || lpad(s::text, 5, '0'), 14, 0.15, 40000, 7000, 20000, 2000, 1, 120, 30, 1, s % 2, 9, 1, 900, 1500
FROM generate_series(0, $4 - 1) AS s,
     LATERAL (SELECT $2::timestamptz + (s * ($3::float8 / $4)) * interval '1 second' AS at) AS x
"""


@dataclass
class Stats:
    scenario: str
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    target_ms: float | None

    @property
    def ok(self) -> bool:
        return self.target_ms is None or self.p99_ms < self.target_ms


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def fresh_database(work: Path) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A new database, and how to get rid of it afterwards."""
    server = os.environ.get("DATABASE_URL")
    if not server:
        pg = start_postgres(work / "pgdata", ephemeral=True)

        async def stop() -> None:
            pg.stop()

        return pg.dsn, stop
    name = f"bench_reporter_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    base, _, query = server.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else ""), drop


async def seed(dsn: str, rows: int, start: datetime) -> dict[str, float]:
    conn = await connect(dsn)
    timings: dict[str, float] = {}
    try:
        await apply_migrations(conn)
        began = time.perf_counter()
        zero32, zero64 = bytes(32), bytes(64)
        for first in range(0, rows, CHUNK):
            last = min(rows, first + CHUNK)
            await conn.execute(SEED_SQL, TENANT, ORG, zero32, zero64, first, last, USERS, SESSION_SHAPE, start,
                               DAYS * 86_400.0, SESSIONS)
            print(f"  seeded {last:,} rows", flush=True)
        await conn.execute("INSERT INTO chain_heads (tenant_id, head_seq, head_hash) VALUES ($1, $2, $3)",
                           TENANT, rows, bytes(32))
        await conn.execute("INSERT INTO signing_keys (key_id, public_key) VALUES ('bench-key', $1)", bytes(32))
        # What the metrics consumer would have added for the same sessions (its m_* columns), before the fold.
        await conn.execute(METRICS_SQL, TENANT, start, DAYS * 86_400.0, SESSIONS, USERS)
        metric_columns = list(DAILY_COLUMNS)
        await conn.execute(
            f"INSERT INTO usage_metric_cumulative (tenant_id, user_key, day, {', '.join(metric_columns)})"
            f" SELECT tenant_id, user_key, day,"
            f" {', '.join(f'sum(sum({c})) OVER (PARTITION BY user_key ORDER BY day)' for c in metric_columns)}"
            f" FROM report_usage_daily WHERE tenant_id = $1 AND m_points > 0 GROUP BY tenant_id, user_key, day", TENANT)
        timings["seed_seconds"] = time.perf_counter() - began
        began = time.perf_counter()
        result = await catch_up(conn, TENANT, rows, wait=True, batch_rows=200_000)
        assert result.folded_seq == rows, result
        timings["rollup_backfill_seconds"] = time.perf_counter() - began
        began = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        timings["vacuum_analyze_seconds"] = time.perf_counter() - began
        sizes = await conn.fetch(
            "SELECT relname, pg_total_relation_size(oid) AS bytes FROM pg_class WHERE relname IN"
            " ('audit_logs', 'report_usage_daily', 'report_sessions')")
        for row in sizes:
            timings[f"size_mb.{row['relname']}"] = round(row["bytes"] / 1e6, 1)
        for table in ("report_usage_daily", "report_sessions", "report_model_daily"):
            timings[f"rows.{table}"] = await conn.fetchval(f"SELECT count(*) FROM {table}")
    finally:
        await conn.close()
    return timings


async def plans(dsn: str, deep: Cursor, session: str, since: datetime) -> dict[str, str]:
    """The access path of each scenario's main query, from EXPLAIN (the index or rollup it reads)."""
    conn = await connect(dsn)

    async def nodes(sql: str, *args: Any) -> str:
        answer = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
        plan = json.loads(answer) if isinstance(answer, str) else answer
        found: list[str] = []

        def walk(node: dict[str, Any]) -> None:
            name = node.get("Index Name") or node.get("Relation Name")
            if name:
                found.append(f"{node['Node Type']} on {name}")
            for child in node.get("Plans", []):
                walk(child)

        walk(plan[0]["Plan"])
        return "; ".join(dict.fromkeys(found))

    try:
        none = queries.FeedFilters()
        sql = usagesql.usage_queries("user")
        days = (TENANT, since.date(), (since + timedelta(days=DAYS + 1)).date())
        return {
            "feed first page": await nodes(*_flat(queries.feed_query(TENANT, none, None, 50))),
            "feed deep cursor": await nodes(*_flat(queries.feed_query(TENANT, none, deep, 50))),
            "feed by user": await nodes(*_flat(queries.feed_query(
                TENANT, queries.FeedFilters(user="user-7@bench.example"), None, 50))),
            "feed by decision": await nodes(*_flat(queries.feed_query(
                TENANT, queries.FeedFilters(decision="reject"), None, 50))),
            "feed by type": await nodes(*_flat(queries.feed_query(
                TENANT, queries.FeedFilters(event_type="api_error"), None, 50))),
            "feed by tool": await nodes(*_flat(queries.feed_query(
                TENANT, queries.FeedFilters(tool="Bash"), None, 50))),
            "session summary (by type)": await nodes(
                "SELECT event_type, count(*) FROM audit_logs WHERE tenant_id = $1 AND session_id = $2"
                " GROUP BY event_type", TENANT, session),
            "usage by user, 30 days (events and metrics)": await nodes(sql.events, *days),
            "usage by user, 30 days (active sessions)": await nodes(sql.sessions or "", TENANT, since,
                                                                    since + timedelta(days=DAYS + 1)),
        }
    finally:
        await conn.close()


def _flat(query: tuple[str, list[Any]]) -> list[Any]:
    return [query[0], *query[1]]


async def measure(client: httpx.AsyncClient, name: str, paths: Callable[[int], str], requests: int,
                  target: float | None, warmup: int = 20) -> Stats:
    latencies: list[float] = []
    for i in range(warmup + requests):
        path = paths(i)
        began = time.perf_counter()
        response = await client.get(path)
        elapsed = (time.perf_counter() - began) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{name}: {path} answered {response.status_code}: {response.text[:300]}")
        if i >= warmup:
            latencies.append(elapsed)
    return Stats(name, requests, round(statistics.median(latencies), 2), round(percentile(latencies, 0.99), 2),
                 round(max(latencies), 2), target)


async def deep_cursors(dsn: str, count: int) -> list[Cursor]:
    conn = await connect(dsn)
    try:
        cursors = []
        for offset in random.Random(7).sample(range(100_000, 900_000), count):
            row = await conn.fetchrow("SELECT event_time, id FROM audit_logs WHERE tenant_id = $1"
                                      " ORDER BY event_time DESC, id DESC OFFSET $2 LIMIT 1", TENANT, offset)
            assert row is not None
            cursors.append(Cursor(row["event_time"], row["id"]))
        return cursors
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    if args.rows < 900_001:
        raise SystemExit("--rows must exceed 900,000 (deep cursors are taken 100,000-900,000 rows down)")
    with tempfile.TemporaryDirectory(prefix="bench-reporter-") as tmp:
        work = Path(tmp)
        dsn, stop_database = await fresh_database(work)
        group: ServiceGroup | None = None
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        broker = None if bootstrap else start_broker(log_file=work / "broker.log")
        bootstrap = bootstrap or (broker.bootstrap if broker else "")
        access_topic = f"bench-access-{uuid.uuid4().hex[:8]}"
        try:
            await ensure_topics(bootstrap, [TopicSpec(access_topic, 1)])
            now = datetime.now(UTC).replace(microsecond=0)
            start = now - timedelta(days=DAYS)
            print(f"seeding {args.rows:,} rows ({USERS:,} users, {SESSIONS:,} sessions, {DAYS} days) ...", flush=True)
            setup = await seed(dsn, args.rows, start)
            print(json.dumps(setup, indent=2))
            cursors = await deep_cursors(dsn, 50)
            issuer = Ed25519Signer.generate()
            (work / "issuer.pub").write_text(base64.b64encode(issuer.public_key).decode() + "\n")
            port = free_port()
            env = {**os.environ, "DATABASE_URL": dsn, "REPORTER_PORT": str(port), "REPORTER_HOST": "127.0.0.1",
                   "LICENSE_PUBLIC_KEYS_FILE": str(work / "issuer.pub"),
                   "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TOPIC_CANONICAL": access_topic,
                   # The bench rows are not chain-valid; keep the chain check out of the measurements.
                   "REPORTER_VERIFY_INTERVAL_SECONDS": "86400",
                   # The reporter signs its access events with its own message key; it will not start without one.
                   **provision_local_keys(work / "keys")}
            group = ServiceGroup(env, work / "log")
            group.start("reporter")
            wait_ready(f"http://127.0.0.1:{port}/readyz", 60)
            conn = await connect(dsn)
            try:
                _, token = await issue_token(conn, tenant_id=TENANT, org_id=ORG, role=AUDITOR, user_email=None,
                                             expires_at=None, created_by="bench")
            finally:
                await conn.close()
            auth = f"Bearer {token}"
            rng = random.Random(11)
            since = start.date().isoformat()
            results: list[Stats] = []
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": auth},
                                         timeout=30) as client:
                n = args.requests
                results.append(await measure(client, "feed, first page (50 rows)",
                                             lambda i: "/api/v1/audit/events?limit=50", n, TARGET_P99_MS))
                results.append(await measure(
                    client, "feed, deep cursor (100k-900k rows down)",
                    lambda i: f"/api/v1/audit/events?limit=50&cursor={cursors[i % len(cursors)].encode()}", n,
                    TARGET_P99_MS))
                results.append(await measure(
                    client, "session summary (random session)",
                    lambda i: f"/api/v1/sessions/session-{rng.randrange(SESSIONS):05d}", n, TARGET_P99_MS))
                results.append(await measure(
                    client, "usage by user, 30 days (top 100 of 1,000)",
                    lambda i: f"/api/v1/usage?group_by=user&since={since}", n, TARGET_P99_MS))
                results.append(await measure(
                    client, "usage by user, 30 days, all 1,000 (reference)",
                    lambda i: f"/api/v1/usage?group_by=user&since={since}&limit=1000", n, None))
                results.append(await measure(
                    client, "usage by day, 30 days (reference)",
                    lambda i: f"/api/v1/usage?group_by=day&since={since}", n, None))
                results.append(await measure(
                    client, "usage by model, 30 days (reference)",
                    lambda i: f"/api/v1/usage?group_by=model&since={since}", n, None))
                results.append(await measure(
                    client, "feed filtered by user (reference)",
                    lambda i: f"/api/v1/audit/events?limit=50&user=device-{rng.randrange(USERS):04d}", n, None))
                results.append(await measure(
                    client, "feed filtered by decision=reject (reference)",
                    lambda i: "/api/v1/audit/events?limit=50&decision=reject", n, None))
                # The event-type and tool filters, each served by an index of its own (0400_reporting.sql)
                # that the signer pays for on every append: a common type, a rare one, a tool.
                results.append(await measure(
                    client, "feed filtered by type=api_request (reference)",
                    lambda i: "/api/v1/audit/events?limit=50&event_type=api_request", n, None))
                results.append(await measure(
                    client, "feed filtered by type=api_error (reference)",
                    lambda i: "/api/v1/audit/events?limit=50&event_type=api_error", n, None))
                results.append(await measure(
                    client, "feed by type=api_error, deep cursor (reference)",
                    lambda i: "/api/v1/audit/events?limit=50&event_type=api_error"
                              f"&cursor={cursors[i % len(cursors)].encode()}", n, None))
                results.append(await measure(
                    client, "feed filtered by tool=Bash (reference)",
                    lambda i: "/api/v1/audit/events?limit=50&tool=Bash", n, None))
                results.append(await measure(
                    client, "feed by tool=Bash, deep cursor (reference)",
                    lambda i: f"/api/v1/audit/events?limit=50&tool=Bash&cursor={cursors[i % len(cursors)].encode()}",
                    n, None))
                results.append(await measure(client, "sessions list (reference)",
                                             lambda i: "/api/v1/sessions?limit=50", n, None))
            access = await plans(dsn, cursors[0], "session-01234", start)
        finally:
            if group is not None:
                group.stop_all()
            if broker is not None:
                broker.stop()
            await stop_database()
    print(f"\n{'scenario':48} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}  target")
    for r in results:
        verdict = "" if r.target_ms is None else ("PASS" if r.ok else "FAIL") + f" (p99 < {r.target_ms:.0f} ms)"
        print(f"{r.scenario:48} {r.p50_ms:9.2f} {r.p99_ms:9.2f} {r.max_ms:9.2f}  {verdict}")
    print("\naccess paths (EXPLAIN):")
    for name, path in access.items():
        print(f"  {name}: {path}")
    report = {"setup": setup, "results": [asdict(r) for r in results], "plans": access}
    return (0 if all(r.ok for r in results) else 1), report


def main() -> None:
    parser = argparse.ArgumentParser(description="Reporter benchmark (see the module docstring).")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per scenario")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    status, report = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    sys.exit(status)


if __name__ == "__main__":
    main()
