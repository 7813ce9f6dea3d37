"""Signer benchmark: rows appended per second by ONE signer process, each row hashed, signed and committed
with its Kafka offsets; then the auditor's verify over the same rows.

Usage: python -m tests.bench.bench_signer [--events 100000] [--tenants 20] [--signing-mode row|batch|both]
[--preload-rows 10000000] [--json out.json] (``make bench-signer``; ``make bench-signer BENCH_ARGS="--tenants 1 --signing-mode both"`` for
one tenant signed per row beside the same signed per batch, SIGNING_MODE=batch)

A fresh in-memory broker and a fresh embedded PostgreSQL (or DATABASE_URL) are started for each run. The
canonical topic is preloaded, then the real signer process is started and the clock runs from its first
committed row to its last. Verify then runs over the table as autovacuum would leave it (VACUUM ANALYZE), with
the trust anchors on as `make verify` uses them: the signer's key enrolled and pinned in a witness directory,
its checkpoints published there by the signer, and both read back (and timed) by verify.

``--preload-rows N`` runs once more with N rows of another tenant already in audit_logs (seeded with
generate_series, then VACUUM ANALYZE) and prints that rate as a ratio of the empty table's: index growth.
The raw Ed25519 rates of this machine are printed alongside, each the mean of a measurement just before and
just after the work it is compared with (this machine's speed drifts within minutes): signing on one core
beside the signer, verifying on one core and on all cores at once beside verify. So is the CPU each appended
row cost the signer (with its signing helper) and the database backends it wrote through, a figure that moves
much less than the rate with other load on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from deploy.local.infra import start_broker
from shared.canonical import CanonicalEvent
from shared.db.migrate import apply_migrations
from shared.db.pool import connect
from shared.enrollment import enroll, pinned_keys
from shared.kafka import TopicSpec, ensure_topics, make_producer, tenant_key
from shared.keys import Ed25519Signer, verify_signature, write_new_key
from shared.merkle import leaf_hash, node_hash
from shared.messages import canonical_event
from shared.messages.auth import load_signing_key, provision_local_keys
from shared.verify import load_key_book, verify_tenants, witnessed_checkpoints
from shared.witness import DirectoryWitness
from tests.bench.bench_reporter import CHUNK, DAYS, ORG, SEED_SQL, SESSION_SHAPE, SESSIONS, USERS
from tests.bench.databases import BenchDatabase

PRELOADED_TENANT = "preloaded-tenant"

PROMPT = (
    "Refactor the billing module so invoices come from the ledger; reach me at <EMAIL> or <PHONE>. "
    "Keep the public API stable and add tests for proration and credit notes. "
) * 3


def make_events(count: int, tenants: int) -> list[bytes]:
    t0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    events = []
    for i in range(count):
        kind = ("user_prompt", "api_request", "tool_decision", "tool_result")[i % 4]
        events.append(CanonicalEvent(
            event_id=f"bench-{i:08d}", tenant_id=f"tenant-{i % tenants:03d}", org_id="acme", license_id="lic",
            plane="claude_code", event_type=kind, event_time=t0 + timedelta(milliseconds=i), received_at=t0,
            session_id=f"session-{i // 40}", correlation_id=f"prompt-{i // 8}", event_sequence=i % 40,
            user_id=f"user-{i % 500:04d}", model="claude-opus-5-5" if kind == "api_request" else None,
            input_tokens=1200 if kind == "api_request" else None, tokens_used=1637 if kind == "api_request" else None,
            decision="accept" if kind == "tool_decision" else None, tool_name="Bash" if kind != "user_prompt" else None,
            content={"prompt": PROMPT} if kind == "user_prompt" else {},
            content_lengths={"prompt": len(PROMPT)} if kind == "user_prompt" else {},
            redacted_fields={"prompt": {"EMAIL": 1, "PHONE": 1}} if kind == "user_prompt" else {},
            content_captured=kind == "user_prompt", attributes={"terminal.type": "xterm", "resource.os.type": "linux"},
        ).to_json())
    return events


def sign_rate(seconds: float = 1.0) -> float:
    key = Ed25519Signer.generate()
    message = bytes(32)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(500):
            key.sign(message)
        count += 500
    return count / (time.perf_counter() - started)


def verify_rate_one_core(seconds: float = 1.0) -> float:
    key = Ed25519Signer.generate()
    message = bytes(32)
    signature = key.sign(message)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(500):
            verify_signature(key.public_key, message, signature)
        count += 500
    return count / (time.perf_counter() - started)


def verify_rate_all_cores(seconds: float = 1.0) -> float:
    """Raw verifications per second with one process per core, all at once: the ceiling verify could reach."""
    cores = os.cpu_count() or 1
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        return sum(pool.map(verify_rate_one_core, [seconds] * cores))


def bracketed(measure: Callable[[], float], before: float) -> float:
    """The mean of a raw rate taken just before and just after the timed work: this machine's speed drifts
    by up to 2x within minutes (other tenants of the host), so one measurement after the run is not enough."""
    return (before + measure()) / 2


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User and system CPU seconds of each process still running (a process that ended is left out)."""
    seconds = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        seconds[pid] = times.user + times.system
    return seconds


def spent_per_row(before: dict[int, float], after: dict[int, float], rows: int) -> float:
    """Microseconds of CPU per row over the processes seen at the end; one that started after ``before`` was
    taken (a pool's connection opened late) counts from zero."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items()) / rows * 1e6


async def client_backends(conn: Any) -> list[int]:
    """The server processes of every other connection to this database."""
    rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
    return [row["pid"] for row in rows]


def identical_leaves_frontier(row_hash: bytes, size: int) -> bytes:
    """The Merkle frontier of ``size`` leaves that all hash ``row_hash`` (the seeded rows): each complete
    subtree of 2**k such leaves has the same hash, so no leaf is visited."""
    by_level = [leaf_hash(row_hash)]
    while len(by_level) < size.bit_length():
        by_level.append(node_hash(by_level[-1], by_level[-1]))
    return b"".join(by_level[k] for k in reversed(range(size.bit_length())) if size >> k & 1)


async def preload(conn: Any, rows: int) -> float:
    """``rows`` synthetic signed-looking rows of another tenant, as the reporting benchmark seeds them (one
    INSERT ... SELECT generate_series per 100,000 rows), then VACUUM ANALYZE as autovacuum would leave them.
    The table's indexes then hold ``rows`` entries when the signer starts. Returns the seconds it took."""
    began = time.perf_counter()
    start = datetime.now(UTC) - timedelta(days=DAYS)
    for first in range(0, rows, CHUNK):
        last = min(rows, first + CHUNK)
        await conn.execute(SEED_SQL, PRELOADED_TENANT, ORG, bytes(32), bytes(64), first, last, USERS, SESSION_SHAPE,
                           start, DAYS * 86_400.0, SESSIONS)
        if last % 1_000_000 == 0 or last == rows:
            print(f"  preloaded {last:,} rows", flush=True)
    await conn.execute(
        "INSERT INTO chain_heads (tenant_id, head_seq, head_hash, merkle_frontier) VALUES ($1, $2, $3, $4)",
        PRELOADED_TENANT, rows, bytes(32), identical_leaves_frontier(bytes(32), rows))
    await conn.execute("VACUUM (ANALYZE) audit_logs")
    return time.perf_counter() - began


async def run(events: int, tenants: int, partitions: int, signing_mode: str = "row",
              preload_rows: int = 0) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-signer-"))
    broker = start_broker(log_file=work / "broker.log")
    database = await BenchDatabase.open("bench_signer", work)
    dsn = database.dsn
    process = None
    try:
        conn = await connect(dsn)
        await apply_migrations(conn)
        preload_seconds = await preload(conn, preload_rows) if preload_rows else 0.0
        await ensure_topics(broker.bootstrap, [TopicSpec("canonical", partitions), TopicSpec("dlq", 1)])
        payloads = make_events(events, tenants)
        producer = make_producer(broker.bootstrap, 1_000_000, linger_ms=20, max_batch_size=512 * 1024)
        await producer.start()
        keys = provision_local_keys(work / "keys")
        canonical_key = load_signing_key(keys["CANONICAL_AUTH_KEY_FILE"], "CANONICAL_AUTH_KEY_FILE")
        for index, payload in enumerate(payloads):
            await producer.send("canonical", payload, key=tenant_key(f"tenant-{index % tenants:03d}"),
                                headers=canonical_event.encode_value(json.loads(payload)["event_id"], payload,
                                                                     canonical_key))
        await producer.flush()
        await producer.stop()
        key = write_new_key(work / "signing.key")
        # The trust anchors on, as in production: the key enrolled and pinned, checkpoints published to a witness.
        witness = DirectoryWitness(work / "witness")
        await enroll(conn, witness, key.public_key, "bench")
        env = {**os.environ, **keys, "DATABASE_URL": dsn, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
               "TOPIC_CANONICAL": "canonical", "TOPIC_DEAD_LETTER": "dlq", "SIGNING_KEY_FILE": str(work / "signing.key"),
               "SIGNER_METRICS_PORT": "0", "KAFKA_SESSION_TIMEOUT_MS": "4000", "LOG_LEVEL": "WARNING",
               "CHECKPOINT_WITNESS_DIR": str(witness.root), "CHECKPOINT_WITNESS_S3_BUCKET": "",
               "SIGNING_MODE": signing_mode}
        sign_before = sign_rate()
        process = subprocess.Popen([sys.executable, "-m", "services.signer"], env=env)  # noqa: ASYNC220 - started once, not awaited
        first_at = None
        signer_pids: list[int] = []
        while True:
            done = int(await conn.fetchval(
                "SELECT coalesce(sum(head_seq), 0) FROM chain_heads WHERE tenant_id <> $1", PRELOADED_TENANT))
            now = time.perf_counter()
            if done and first_at is None:
                first_at, first_rows = now, done
                # CPU per row beside the rate: it depends much less than the rate on what else runs on the machine.
                signer_pids = [process.pid, *(child.pid for child in psutil.Process(process.pid).children())]
                signer_cpu, backend_cpu = cpu_seconds(signer_pids), cpu_seconds(await client_backends(conn))
            if done >= events:
                break
            if process.poll() is not None:
                raise RuntimeError(f"the signer exited with {process.returncode} before appending every event")
            await asyncio.sleep(0.05)
        assert first_at is not None
        append_rate = (events - first_rows) / (now - first_at)
        signer_us_per_row = spent_per_row(signer_cpu, cpu_seconds(signer_pids), events - first_rows)
        # The database's own CPU, where its backends run on this machine (an embedded server, or a local one).
        backend_us_per_row = spent_per_row(backend_cpu, cpu_seconds(await client_backends(conn)), events - first_rows)
        for _ in range(200):  # the publisher beside the signer catches up with the last checkpoints
            behind = await conn.fetchval(
                "SELECT count(*) FROM chain_checkpoints c LEFT JOIN checkpoint_witness_cursor w USING (tenant_id)"
                " WHERE c.chain_seq > coalesce(w.published_seq, 0)")
            if not behind:
                break
            await asyncio.sleep(0.05)
        process.terminate()
        process.wait(30)
        process = None
        raw_sign_rate = bracketed(sign_rate, sign_before)

        # As autovacuum leaves insert-only tables in production: statistics for the planner, and hint bits
        # set, so verify is not charged for the first read of freshly committed rows (the content of
        # version 2 rows, in audit_content, is read with them).
        await conn.execute("VACUUM (ANALYZE) audit_logs, audit_content")
        verify_rate = raw_verify_rate = raw_verify_all_cores = float("nan")
        if signing_mode == "row":  # verify checks row signatures; batch-signed rows are checked by proofs
            one_core_before, all_cores_before = verify_rate_one_core(), verify_rate_all_cores()
            started = time.perf_counter()
            # What `make verify` does by default: keys from the pin, checkpoints from the witness, both timed.
            book = await load_key_book(conn, await pinned_keys(witness))
            witnessed = [c for c in witnessed_checkpoints(witness.checkpoint_records())
                         if c.tenant_id != PRELOADED_TENANT]
            reports = await verify_tenants(conn, [f"tenant-{t:03d}" for t in range(tenants)], book, dsn=dsn,
                                           checkpoints=witnessed)
            assert all(report.ok for report in reports), [report.breaks for report in reports]
            assert witnessed and sum(report.checkpoints_checked for report in reports) == len(witnessed)
            rows = sum(report.rows for report in reports)
            verify_rate = rows / (time.perf_counter() - started)
            raw_verify_rate = bracketed(verify_rate_one_core, one_core_before)
            raw_verify_all_cores = bracketed(verify_rate_all_cores, all_cores_before)
        await conn.close()
    finally:
        if process is not None:
            process.kill()
        broker.stop()
        await database.close()
    return {"events": events, "signing_mode": signing_mode, "preloaded_rows": preload_rows,
            "preload_seconds": round(preload_seconds, 1), "append_rows_per_s": append_rate,
            "signer_cpu_us_per_row": signer_us_per_row, "database_cpu_us_per_row": backend_us_per_row,
            "verify_rows_per_s": verify_rate,
            "pynacl_sign_per_s": raw_sign_rate, "pynacl_verify_per_s": raw_verify_rate,
            "pynacl_verify_all_cores_per_s": raw_verify_all_cores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--signing-mode", choices=("row", "batch", "both"), default="row",
                        help="SIGNING_MODE of the signer; both: per row, then per batch, in this run")
    parser.add_argument("--preload-rows", type=int, default=0,
                        help="also run with this many rows already in audit_logs (e.g. 10000000) and print the "
                             "rate beside the empty table's")
    args = parser.parse_args()
    modes = ("row", "batch") if args.signing_mode == "both" else (args.signing_mode,)
    results = [asyncio.run(run(args.events, args.tenants, args.partitions, mode)) for mode in modes]
    for result in results:
        print(f"signer append ({result['signing_mode']} signing): {result['append_rows_per_s']:,.0f} rows/s "
              "(one process, committed with offsets); "
              f"{result['append_rows_per_s'] / result['pynacl_sign_per_s']:.2f}x raw PyNaCl signing of this run")
        print(f"  CPU per row: signer and its helper {result['signer_cpu_us_per_row']:.1f} us, "
              f"database backends {result['database_cpu_us_per_row']:.1f} us "
              f"(raw PyNaCl signing: {1e6 / result['pynacl_sign_per_s']:.1f} us)")
    loaded = None
    if args.preload_rows:
        loaded = asyncio.run(run(args.events, args.tenants, args.partitions, modes[0], args.preload_rows))
        print(f"signer append ({modes[0]} signing) with {args.preload_rows:,} rows already in audit_logs: "
              f"{loaded['append_rows_per_s']:,.0f} rows/s = "
              f"{loaded['append_rows_per_s'] / results[0]['append_rows_per_s']:.2f}x the empty table's "
              f"(preloaded in {loaded['preload_seconds']:.0f} s); CPU per row: signer and its helper "
              f"{loaded['signer_cpu_us_per_row']:.1f} us, database backends {loaded['database_cpu_us_per_row']:.1f} us")
    if len(results) == 2:
        ratio = results[1]["append_rows_per_s"] / results[0]["append_rows_per_s"]
        print(f"per-batch / per-row signing: {ratio:.2f}x ({args.tenants} tenant(s))")
    row_result = results[0]
    if row_result["signing_mode"] == "row":
        print(f"verify:        {row_result['verify_rows_per_s']:,.0f} rows/s "
              "(all cores; checkpoints from the witness, keys from the pin, as make verify); "
              f"{row_result['verify_rows_per_s'] / row_result['pynacl_verify_per_s']:.2f}x raw PyNaCl verify "
              f"on one core, {row_result['verify_rows_per_s'] / row_result['pynacl_verify_all_cores_per_s']:.2f}x "
              "on all cores (raw rates taken just before and after verify)")
    print(f"raw PyNaCl on this machine: sign {row_result['pynacl_sign_per_s']:,.0f}/s, "
          f"verify {row_result['pynacl_verify_per_s']:,.0f}/s on one core, "
          f"{row_result['pynacl_verify_all_cores_per_s']:,.0f}/s on all cores")
    if args.json:
        everything = [*results, loaded] if loaded is not None else results
        args.json.write_text(json.dumps(everything[0] if len(everything) == 1 else everything, indent=2))


if __name__ == "__main__":
    main()
