"""Fault benchmark: kill -9 each stage under load, restart it, and measure how long events wait.

Usage: python -m tests.bench.bench_faults [--stages receiver,redactor,signer,usage] [--rate 1500]
[--kill-at 10] [--restart-after 2] [--duration 40] [--membership static|dynamic] [--json out.json]
(``make bench-faults``)

One stack (`make run`'s services on a fresh broker and database) serves every stage in turn. For each
stage the exporter-like client offers ``rate`` events/s for ``duration`` seconds; ``kill-at`` seconds after its
first request fell due, the stage gets SIGKILL, and ``restart-after`` seconds later it is started again. After
the client has had every request accepted (it retries as OTLP exporters do), the rows are counted. Printed per
stage:

- max wait: the longest any event took from when the client first tried to send it to its signed row
  being visible (retries against a dead receiver included), and the longest accept -> row;
- p99 back under 1 s: seconds after the restart from which every later second of sending has a
  due -> row p99 under 1 s;
- lost events (accepted but never a row: none appeared for 15 s, after at least 120 s of waiting) and
  duplicated rows (the same event id twice): both must be 0;
- where the restart's time went, from the restarted stage's own log (the services log at INFO here): seconds
  from the restart to its consumer starting to join its group (imports, keys, database, Kafka clients started),
  to the process running (the redactor: its PII engine built too), to its consumer group assigning it partitions
  (the join and rebalance), and to the first row signed after the restart;
- events redone: what the killed redactor had produced but not committed, done again after the restart ahead of
  the backlog (the signer drops the repeats; its duplicate and stale counters, read from its /metrics).

The JSON adds, per second after the restart: the rows landed (how fast the backlog is worked off), each consumer's
lag, and the share of the second the restarted stage's main thread ran and was runnable but waited for a CPU (a
stage working off a backlog that waits for a CPU much of the time is starved by its neighbours, not slow).

The usage stage writes usage rows, not audit rows: killing it shows only that the audit path is unaffected.

The consumers are static group members by default, as the Helm chart deploys them (a container restarted in its
pod keeps its name): the restarted instance rejoins under the same KAFKA_GROUP_INSTANCE_ID. ``--membership
dynamic`` measures the restart without it, which has to wait for the group to drop the dead member. How long the
group coordinator takes is the broker's: the embedded broker used here holds a static rejoin about 6 s and a
dynamic one about 11 s (it completes the join with the dead member still in the group), where Apache Kafka, by
KIP-345, hands a returning static member its partitions back without a rebalance; the figures here are an
upper bound for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.bench.bench_pipeline import load_config, offer_load, schedstat
from tests.bench.exporter_load import LoadConfig
from tests.bench.pipeline_stack import LagSampler, RowWatcher, Stack, metric_total, percentile, pipeline_stack
from tests.bench.report import publish

# The line each service logs once it is running (its Kafka clients started), and the consumers' assignment line.
RUNNING_MESSAGES = ("receiver listening", "redactor running", "signer running", "usage consumer started")
ASSIGNED_MESSAGE = "partitions assigned"
JOINING_MESSAGE = "joining consumer group"


async def sample_schedule(stack: Stack, stage: str, seconds: int) -> list[tuple[float, float]]:
    """For each second after the restart: the share of it the restarted stage ran, and the share it was runnable
    but waited for a CPU (the rest it was idle: waiting for the broker, the database, or work). A stage working off
    its backlog at full speed has the two adding up to 1; one that waits for a CPU is starved by its neighbours."""
    found: list[tuple[float, float]] = []
    pid = stack.group.processes[stage].pid
    previous = schedstat(pid)
    for _ in range(seconds):
        await asyncio.sleep(1.0)
        now = schedstat(pid)
        found.append((round(now[0] - previous[0], 2), round(now[1] - previous[1], 2)))
        previous = now
    return found


async def signer_repeats(stack: Stack) -> float | None:
    """Canonical events the signer skipped as already chained (or already applied), so far."""
    found = [await metric_total(stack.env, "SIGNER_METRICS_PORT", name)
             for name in ("signer_duplicates_skipped_total", "signer_stale_messages_total")]
    return None if None in found else sum(value or 0.0 for value in found)


def restart_milestones(stack: Stack, stage: str, restarted_at: float) -> dict[str, float | None]:
    """Seconds from the restart to the restarted process logging that its consumer joins its group, that it runs,
    and that its group assigned it partitions (None when it did not log it: a log level above INFO, or the
    receiver, which has no group)."""
    found: dict[str, float | None] = {"joining_s": None, "running_s": None, "assigned_s": None}
    path = stack.work / "log" / f"{stage}.log"
    if not path.exists():
        return found
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["ts"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if at < restarted_at:
            continue
        message = entry.get("msg")
        key = ("running_s" if message in RUNNING_MESSAGES else "assigned_s" if message == ASSIGNED_MESSAGE
               else "joining_s" if message == JOINING_MESSAGE else None)
        if key is not None and found[key] is None:
            found[key] = round(at - restarted_at, 2)
    return found


async def wait_for_rows(watcher: RowWatcher, count: int, *, timeout: float = 120.0, idle: float = 15.0,
                        limit: float = 900.0) -> None:
    """Until ``count`` rows are visible. Past ``timeout``, only while rows still appear: a pipeline that is slow on a
    loaded machine is waited for (its late rows are not lost), one that has stopped for ``idle`` seconds is not."""
    started = last_progress = time.monotonic()
    seen = len(watcher.rows)
    while len(watcher.rows) < count:
        now = time.monotonic()
        if len(watcher.rows) != seen:
            seen, last_progress = len(watcher.rows), now
        if now - started > limit or (now - started > timeout and now - last_progress > idle):
            return
        await asyncio.sleep(0.2)


async def start_load(stack: Stack, config: LoadConfig) -> tuple[asyncio.Task[dict[str, Any]], float]:
    """Starts the load client; returns it and when its first request fell due. The client builds its batches first
    (seconds on a loaded machine), so the kill is timed from the real start, not from the process's."""
    folder = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    marker = folder / "started"
    config.started_file = str(marker)
    load = asyncio.create_task(offer_load(stack, config))
    try:
        while not marker.exists() or not marker.read_text():
            if load.done():
                await load  # the client failed before sending: its error
                raise RuntimeError("the load client ended before it started sending")
            await asyncio.sleep(0.02)
        return load, float(marker.read_text())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def one_stage(stack: Stack, watcher: RowWatcher, lags: LagSampler, stage: str, *, rate: float, duration: float, kill_at: float,
                    restart_after: float, records: int, first_session: int) -> dict[str, Any]:
    rows_before = len(watcher.rows)
    load_before = os.getloadavg()[0]
    load, started = await start_load(stack, load_config(stack, rate, duration, records, first_session))
    await asyncio.sleep(max(0.0, started + kill_at - time.time()))
    repeats_before = await signer_repeats(stack)
    killed_at = time.time()
    stack.kill(stage)
    await asyncio.sleep(restart_after)
    restarted_at = time.time()
    stack.restart(stage)
    schedule = asyncio.create_task(sample_schedule(stack, stage, 25))
    result = await load
    accepted = [r for r in result["requests"] if r["accepted"] is not None]
    expected = sum(r["records"] for r in accepted)
    await wait_for_rows(watcher, rows_before + expected)
    await watcher.poll_once()
    repeats_after = await signer_repeats(stack)
    rows = watcher.rows[rows_before:]
    due = {r["session_id"]: r["due"] for r in result["requests"]}
    waits = [(due[row.session_id], row.seen_at - due[row.session_id]) for row in rows if row.session_id in due]
    by_second: dict[int, list[float]] = {}
    for sent_at, wait in waits:
        # floor, not int(): an event due half a second before the restart belongs to second -1, not 0.
        by_second.setdefault(math.floor(sent_at - restarted_at), []).append(wait)
    # The first second after the restart from which every later second's p99 is under 1 s.
    recovered_after: int | None = None
    for second in sorted(s for s in by_second if s >= 0):
        p99 = percentile(by_second[second], 0.99)
        if p99 is not None and p99 < 1.0:
            if recovered_after is None:
                recovered_after = second
        else:
            recovered_after = None
    first_row_after_restart = min((row.seen_at for row in rows if row.seen_at >= restarted_at), default=None)
    # Rows landed in each second after the restart: how fast the backlog is worked off.
    landed: dict[int, int] = {}
    for row in rows:
        if row.seen_at >= restarted_at:
            landed[math.floor(row.seen_at - restarted_at)] = landed.get(math.floor(row.seen_at - restarted_at), 0) + 1
    return {
        "stage": stage,
        "offered_events_per_s": rate,
        "restart_to": {
            **restart_milestones(stack, stage, restarted_at),
            "first_row_s": None if first_row_after_restart is None else round(first_row_after_restart - restarted_at, 2),
        },
        "killed_at_s": round(killed_at - result["started"], 2),
        "restarted_at_s": round(restarted_at - result["started"], 2),
        "accepted_events": expected,
        "rows": len(rows),
        "lost_events": expected - len(rows),
        "requests_given_up": result["given_up"],
        # Events the pipeline handled twice because the killed stage had not committed them: the signer drops the
        # repeats (by event id, or by its stored offsets); they are work done again ahead of the backlog.
        "events_redone": None if stage == "signer" or repeats_before is None or repeats_after is None
        else round(repeats_after - repeats_before),
        "max_wait_s": round(max((w for _, w in waits), default=0.0), 2),
        "max_accept_to_row_s": round(max((row.latency for row in rows), default=0.0), 2),
        "p99_under_1s_after_restart_s": recovered_after,
        "p99_by_second_after_restart_s": {
            str(s): round(percentile(v, 0.99) or 0.0, 2) for s, v in sorted(by_second.items()) if -3 <= s <= 20
        },
        "rows_by_second_after_restart": [landed.get(s, 0) for s in range(25)],
        # Per second after the restart: the restarted stage's time running, and runnable but waiting for a CPU.
        "ran_and_waited_for_cpu_by_second_after_restart": await schedule,
        # Raw messages (one per request) behind the redactor, canonical events behind the signer.
        "lag_by_second_after_restart": lags.by_second(restarted_at, restarted_at + 25),
        "http_statuses": result["statuses"],
        "connection_errors": result["connection_errors"],
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def membership_env(membership: str) -> dict[str, str]:
    """Static membership names each consumer as a pod name would (one instance per group here, so one name
    serves every group); dynamic leaves KAFKA_GROUP_INSTANCE_ID unset, the default."""
    return {"KAFKA_GROUP_INSTANCE_ID": "bench-instance-0"} if membership == "static" else {}


async def run(stages: list[str], rate: float, duration: float, kill_at: float, restart_after: float,
              records: int, settle: float, membership: str = "static") -> dict[str, Any]:
    results = []
    async with pipeline_stack(extra_env=membership_env(membership)) as stack:
        watcher = RowWatcher(stack.dsn)
        await watcher.start()
        lags = LagSampler(stack.env)
        await lags.start()
        try:
            first_session = 0
            for stage in stages:
                results.append(await one_stage(stack, watcher, lags, stage, rate=rate, duration=duration, kill_at=kill_at,
                                               restart_after=restart_after, records=records,
                                               first_session=first_session))
                first_session += int(rate * duration / records) + 1
                await asyncio.sleep(settle)
            duplicates = await watcher.duplicates()
        finally:
            await lags.stop()
            await watcher.stop()
    return {"rate": rate, "membership": membership, "duration_s": duration, "kill_at_s": kill_at, "restart_after_s": restart_after,
            "duplicate_rows": duplicates, "stages": results}


def recovered(stage: dict[str, Any]) -> str:
    after = stage["p99_under_1s_after_restart_s"]
    return "not before the load ended" if after is None else str(after)


def summary(report: dict[str, Any]) -> str:
    lines = [f"kill -9 at {report['kill_at_s']} s, restart {report['restart_after_s']} s later, "
             f"{report['rate']:,.0f} events/s offered, {report['membership']} group membership",
             "stage    | max wait s | max accept->row s | p99<1s after restart (s) | lost | load avg | "
             "restart -> joining / running / assigned / first row (s) | events redone"]
    for stage in report["stages"]:
        milestones = stage["restart_to"]
        lines.append(f"{stage['stage']:<8} | {stage['max_wait_s']:>10} | {stage['max_accept_to_row_s']:>17} | "
                     f"{recovered(stage):>24} | {stage['lost_events']:>4} | "
                     f"{stage['load_average_1m'][0]}->{stage['load_average_1m'][1]} | "
                     f"{milestones['joining_s']} / {milestones['running_s']} / {milestones['assigned_s']} / "
                     f"{milestones['first_row_s']} | {stage['events_redone']}")
    lines.append(f"duplicate rows: {report['duplicate_rows']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default="receiver,redactor,signer,usage")
    parser.add_argument("--rate", type=float, default=1500.0, help="offered events/s")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of load per stage")
    parser.add_argument("--kill-at", type=float, default=10.0, help="seconds into the load")
    parser.add_argument("--restart-after", type=float, default=2.0)
    parser.add_argument("--records-per-request", type=int, default=50)
    parser.add_argument("--settle", type=float, default=5.0, help="quiet seconds between stages")
    parser.add_argument("--membership", choices=("dynamic", "static"), default="static",
                        help="consumer group membership: static (the Helm chart's default) sets "
                             "KAFKA_GROUP_INSTANCE_ID (KIP-345); dynamic leaves it unset")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = asyncio.run(run(args.stages.split(","), args.rate, args.duration, args.kill_at, args.restart_after,
                             args.records_per_request, args.settle, args.membership))
    publish(report, summary(report), args.json)


if __name__ == "__main__":
    main()
