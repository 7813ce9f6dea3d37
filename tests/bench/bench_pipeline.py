"""Whole-pipeline benchmark: `make run`'s services (receiver, redactor, signer, usage) on a fresh broker and
database, loaded with Claude Code-shaped log batches from two tenants at several rates.

Usage: python -m tests.bench.bench_pipeline [--rates 1000,2000,3000,4000] [--duration 30]
[--records-per-request 50] [--json out.json]   (``make bench-pipeline``, BENCH_ARGS for the options)

For each offered rate the client (its own process, retrying like an OTLP exporter) sends for ``duration``
seconds; the watcher reads the committed rows as they appear. Printed per rate: rows/s landed while the load
ran (after the first fifth, the warm-up), accept -> signed row latency percentiles (the receiver's
``received_at`` to the row being visible, to within the 0.1 s poll), due -> row percentiles (from when the
client first tried, retries included), the largest consumer lag of the redactor (raw messages, one per request)
and of the signer (events), which says where a backlog built up, the CPU seconds each service spent per 1,000
events (a service's helper processes included; also the broker, and the PostgreSQL backends serving the services'
connections: the watcher's own and the server's background processes are left out), and the load average, which
says how far the machine was from quiet. The JSON adds the signer's events per append transaction (the database's
CPU per event falls as they grow: at 3,000 events/s, 0.134 CPU-s per 1,000 events at 80 a transaction, 0.075 at
229) and each service's share of the run on a CPU and waiting for one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from tests.bench.exporter_load import LoadConfig
from tests.bench.pipeline_stack import LagSampler, RowWatcher, Stack, metric_total, percentile, pipeline_stack
from tests.bench.report import publish

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "claude-code-2.1.332"
_TICKS = os.sysconf("SC_CLK_TCK")


def fixtures_dir() -> Path:
    """The real captures: AUDIT_FIXTURES_DIR (as for the receiver benchmark), else the folder beside the checkout."""
    return Path(os.environ.get("AUDIT_FIXTURES_DIR", str(FIXTURES)))


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def service_cpu(stack: Stack) -> dict[str, float]:
    """Each service's CPU seconds, its helper processes' included (the signer's signing helper)."""
    spent_by: dict[str, float] = {}
    for name, process in stack.group.processes.items():
        try:
            helpers = [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
        except psutil.Error:
            helpers = []
        spent_by[name] = cpu_seconds(process.pid) + sum(map(cpu_seconds, helpers))
    return spent_by


def schedstat(pid: int) -> tuple[float, float]:
    """Seconds the process's main thread has run on a CPU and waited for one (runnable, but the CPUs were busy)."""
    try:
        ran, waited, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(ran) / 1e9, int(waited) / 1e9


def service_schedule(stack: Stack) -> dict[str, tuple[float, float]]:
    return {name: schedstat(process.pid) for name, process in stack.group.processes.items()}


async def infrastructure_cpu(stack: Stack, watcher: RowWatcher) -> dict[str, dict[int, float]]:
    """CPU seconds of the broker process and of each PostgreSQL backend serving the services, by pid."""
    return {"broker": {stack.broker_pid: cpu_seconds(stack.broker_pid)},
            "postgres": {pid: cpu_seconds(pid) for pid in await watcher.service_backends()}}


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between the two readings by the processes seen in the second one; a backend that
    started after the first (a pool's connection opened late) counts from zero."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


async def offer_load(stack: Stack, config: LoadConfig) -> dict[str, Any]:
    """Runs the exporter-like client process to completion (sending, then retrying until accepted)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-load-"))
    (folder / "config.json").write_text(json.dumps(config.__dict__))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bench.exporter_load", str(folder / "config.json"), str(folder / "result.json")
    )
    await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"the load client failed with {process.returncode}")
    result: dict[str, Any] = json.loads((folder / "result.json").read_text())
    shutil.rmtree(folder, ignore_errors=True)
    return result


def load_config(stack: Stack, rate: float, duration: float, records: int, first_session: int) -> LoadConfig:
    return LoadConfig(host="127.0.0.1", port=stack.receiver_port, fixtures=str(fixtures_dir()),
                      authorizations=stack.authorizations, events_per_second=rate, duration=duration,
                      records_per_request=records, first_session=first_session)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


async def one_rate(stack: Stack, watcher: RowWatcher, lags: LagSampler, rate: float, duration: float, records: int,
                   first_session: int) -> dict[str, Any]:
    rows_before = len(watcher.rows)
    cpu_before = service_cpu(stack)
    schedule_before, schedule_from = service_schedule(stack), time.time()
    infrastructure_before = await infrastructure_cpu(stack, watcher)
    transactions_before = await metric_total(stack.env, "SIGNER_METRICS_PORT", "signer_append_duration_seconds_count")
    load_before = os.getloadavg()[0]
    result = await offer_load(stack, load_config(stack, rate, duration, records, first_session))
    accepted = [r for r in result["requests"] if r["accepted"] is not None]
    expected = sum(r["records"] for r in accepted)
    await watcher.wait_for(rows_before + expected, timeout=120)
    cpu_after = service_cpu(stack)
    schedule_after, schedule_wall = service_schedule(stack), time.time() - schedule_from
    infrastructure_after = await infrastructure_cpu(stack, watcher)
    transactions_after = await metric_total(stack.env, "SIGNER_METRICS_PORT", "signer_append_duration_seconds_count")
    for name, after in infrastructure_after.items():
        cpu_after[name] = spent(infrastructure_before[name], after)
    rows = watcher.rows[rows_before:]
    due = {r["session_id"]: r["due"] for r in result["requests"]}
    window_from = result["started"] + duration / 5
    window_until = result["offered_until"]
    landed = sum(1 for row in rows if window_from <= row.seen_at < window_until)
    latencies = [row.latency for row in rows]
    waits = [row.seen_at - due[row.session_id] for row in rows if row.session_id in due]
    events = max(1, len(rows))
    return {
        "offered_events_per_s": rate,
        "rows_per_s": landed / max(0.001, window_until - window_from),
        "accepted_events": expected,
        "rows": len(rows),
        "missing_rows": expected - len(rows),
        "accept_to_row_ms": {name: _ms(percentile(latencies, q)) for name, q in
                             (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))},
        "due_to_row_ms": {name: _ms(percentile(waits, q)) for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))},
        "http_statuses": result["statuses"],
        "connection_errors": result["connection_errors"],
        # How many events the signer appended per transaction, on average.
        "signer_rows_per_transaction": None if transactions_before is None or transactions_after is None
        else round(len(rows) / max(1.0, transactions_after - transactions_before), 1),
        # Raw messages (one per request) behind the redactor, canonical events behind the signer.
        "max_consumer_lag_messages": lags.max_lag(result["started"], time.time()),
        # Of the run's wall time, the share each service's main thread ran and the share it was runnable but
        # waited for a CPU: a stage that falls behind while its two shares add up to well under 1 is held up by
        # something else than CPU (its backpressure, the broker, the database).
        "ran_and_waited_for_cpu_share": {
            name: [round((schedule_after[name][i] - schedule_before[name][i]) / schedule_wall, 2) for i in (0, 1)]
            for name in schedule_after},
        "cpu_s_per_1000_events": {name: round((cpu_after[name] - cpu_before.get(name, 0)) * 1000 / events, 3)
                                  for name in cpu_after},
        "cpu_s_per_1000_events_total": round(sum(cpu_after[name] - cpu_before.get(name, 0)
                                                 for name in cpu_after) * 1000 / events, 3),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


async def run(rates: list[float], duration: float, records: int) -> dict[str, Any]:
    results = []
    async with pipeline_stack() as stack:
        watcher = RowWatcher(stack.dsn)
        await watcher.start()
        lags = LagSampler(stack.env)
        await lags.start()
        try:
            first_session = 0
            for rate in rates:
                results.append(await one_rate(stack, watcher, lags, rate, duration, records, first_session))
                first_session += int(rate * duration / records) + 1
            duplicates = await watcher.duplicates()
        finally:
            await lags.stop()
            await watcher.stop()
    return {"cpu_count": os.cpu_count(), "records_per_request": records, "duration_s": duration,
            "duplicate_rows": duplicates, "runs": results}


def summary(report: dict[str, Any]) -> str:
    lines = ["offered ev/s | rows/s | accept->row p50 / p99 / max (ms) | missing | load avg | max lag redactor "
             "(requests) / signer (events) | CPU s/1k events"]
    for run_ in report["runs"]:
        latency = run_["accept_to_row_ms"]
        lag = run_["max_consumer_lag_messages"]
        cpu = ", ".join(f"{name} {value}" for name, value in run_["cpu_s_per_1000_events"].items())
        cpu += f"; total {run_['cpu_s_per_1000_events_total']}"
        lines.append(
            f"{run_['offered_events_per_s']:>12,.0f} | {run_['rows_per_s']:>6,.0f} | "
            f"{latency['p50']} / {latency['p99']} / {latency['max']} | {run_['missing_rows']} | "
            f"{run_['load_average_1m'][0]}->{run_['load_average_1m'][1]} | "
            f"{lag.get('redactor', math.nan):.0f} / {lag.get('signer', math.nan):.0f} | {cpu}"
        )
    lines.append(f"duplicate rows: {report['duplicate_rows']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="1000,2000,3000,4000", help="offered events/s, comma-separated")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per rate")
    parser.add_argument("--records-per-request", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    started = time.monotonic()
    report = asyncio.run(run([float(r) for r in args.rates.split(",")], args.duration, args.records_per_request))
    report["wall_s"] = round(time.monotonic() - started, 1)
    publish(report, summary(report), args.json)


if __name__ == "__main__":
    main()
