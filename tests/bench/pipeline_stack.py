"""The whole pipeline for the pipeline and fault benchmarks: `make run`'s services as processes, on a fresh
in-memory broker and a fresh database (of its own on DATABASE_URL's server, or an embedded PostgreSQL). Each
service runs in a session of its own, as the broker and the database do (``ServiceGroup.own_sessions``: where
the kernel shares the CPUs between sessions first, each service gets a share, as its container would).

Also the row watcher: it reads the rows the signer commits as they appear, so each row's delay from the
receiver's accept (``received_at``) to the signed row being visible is known to within one poll.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from deploy.local.infra import Broker, free_port, start_broker
from deploy.local.stack import ServiceGroup, prepare, wait_pipeline_ready
from services.auditctl.licenses import store_license
from services.auditctl.settings import CliSettings
from shared.db.pool import connect
from shared.keys import load_signer
from shared.licensing import issue_license
from tests.bench.databases import BenchDatabase

PIPELINE_SERVICES = ("receiver", "redactor", "signer", "usage")


@dataclass
class Stack:
    work: Path
    env: dict[str, str]
    dsn: str
    group: ServiceGroup
    authorizations: list[str]  # one HTTP Basic header value per tenant
    receiver_port: int
    broker_pid: int

    def kill(self, name: str) -> None:
        """kill -9: the process gets no chance to commit, flush or leave its group."""
        self.group.stop(name, signal.SIGKILL)

    def restart(self, name: str) -> None:
        self.group.start(name)

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.work / "log" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@asynccontextmanager
async def pipeline_stack(tenants: int = 2, extra_env: dict[str, str] | None = None) -> Any:
    """Starts everything, waits until every service is ready, yields the Stack; stops everything after
    (BENCH_KEEP_LOGS=1 keeps the services' logs in the work folder)."""
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    broker: Broker = start_broker(log_file=work / "broker.log")
    database = await BenchDatabase.open("bench_pipeline", work)
    dsn = database.dsn
    keys = work / "keys"
    keys.mkdir()
    receiver_port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "LICENSE_ISSUER_KEY_FILE": str(keys / "license-issuer.key"),
        "LICENSE_PUBLIC_KEYS_FILE": str(keys / "license-issuer.pub"),
        "SIGNING_KEY_FILE": str(keys / "signing.key"),
        "CHECKPOINT_WITNESS_DIR": str(work / "witness"),
        "CHECKPOINT_WITNESS_S3_BUCKET": "",
        "RECEIVER_PORT": str(receiver_port),
        "RECEIVER_HOST": "127.0.0.1",
        "RECEIVER_METRICS_PORT": "0",
        "REDACTOR_METRICS_PORT": str(free_port()),
        "SIGNER_METRICS_PORT": str(free_port()),
        "USAGE_METRICS_PORT": str(free_port()),
        # INFO: a few lines per start and rebalance, which the fault benchmark reads for where a restart's time
        # goes; nothing per event or batch.
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        **(extra_env or {}),
    }
    group = ServiceGroup(env, work / "log", own_sessions=True)
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        settings = CliSettings()
        await prepare(settings)
        issuer = load_signer(file=settings.license_issuer_key_file)
        authorizations = []
        for index in range(tenants):
            org = f"bench-org-{index}"
            lic, token = issue_license(issuer, org_id=org)
            await store_license(dsn, lic)
            authorizations.append("Basic " + base64.b64encode(f"{org}:{token}".encode()).decode())
        os.environ.clear()
        os.environ.update(saved)
        for name in PIPELINE_SERVICES:
            group.start(name)
        await asyncio.to_thread(wait_pipeline_ready, env, 120, PIPELINE_SERVICES)
        yield Stack(work, env, dsn, group, authorizations, receiver_port, broker.process.pid)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        group.stop_all()
        broker.stop()
        await database.close()
        if not os.environ.get("BENCH_KEEP_LOGS"):
            shutil.rmtree(work, ignore_errors=True)


@dataclass
class SeenRow:
    session_id: str
    received_at: float  # the receiver's accept, epoch seconds
    seen_at: float  # when the watcher first saw the committed row, epoch seconds

    @property
    def latency(self) -> float:
        return self.seen_at - self.received_at


@dataclass
class RowWatcher:
    """Polls audit_logs for rows past the last id seen. One signer appends one batch at a time, so ids
    become visible in order and none is skipped."""

    dsn: str
    interval: float = 0.1
    rows: list[SeenRow] = field(default_factory=list)
    _last_id: int = 0
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def start(self) -> None:
        self._conn: asyncpg.Connection = await connect(self.dsn)
        self._task = asyncio.create_task(self._run())

    async def service_backends(self) -> list[int]:
        """The PostgreSQL server processes of the services' connections (every one to this database but the
        watcher's own)."""
        async with self._lock:
            rows = await self._conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                                          " AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
        return [row["pid"] for row in rows]

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self.poll_once()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    async def poll_once(self) -> int:
        async with self._lock:
            return await self._poll()

    async def _poll(self) -> int:
        records = await self._conn.fetch(
            "SELECT id, session_id, extract(epoch FROM received_at)::float8 AS received FROM audit_logs "
            "WHERE id > $1 ORDER BY id",
            self._last_id,
        )
        now = time.time()
        for record in records:
            self.rows.append(SeenRow(record["session_id"] or "", record["received"], now))
        if records:
            self._last_id = records[-1]["id"]
        return len(records)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        await self._conn.close()

    async def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.rows) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return len(self.rows) >= count

    async def duplicates(self) -> int:
        """Rows beyond one per event id (the signer dedupes, so this must be 0)."""
        async with self._lock:
            value = await self._conn.fetchval("SELECT count(*) - count(DISTINCT event_id) FROM audit_logs")
        return int(value)


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def seconds_buckets(rows: list[SeenRow], since: float) -> Iterator[tuple[int, list[float]]]:
    """Latencies grouped by the whole second (after ``since``) in which the receiver accepted the event."""
    buckets: dict[int, list[float]] = {}
    for row in rows:
        buckets.setdefault(int(row.received_at - since), []).append(row.latency)
    yield from sorted(buckets.items())


# The consumers' lag gauges (messages behind the partition end), by the env var naming their metrics port. A raw
# message is one OTLP request (``records_per_request`` events); a canonical message is one event.
LAG_GAUGES = {"redactor": ("REDACTOR_METRICS_PORT", "redactor_consumer_lag"),
              "signer": ("SIGNER_METRICS_PORT", "signer_consumer_lag")}


@dataclass
class LagSampler:
    """Reads each consumer's lag from its /metrics every ``interval`` seconds: where a backlog builds up between
    stages, and how fast a restarted stage works it off."""

    env: dict[str, str]
    interval: float = 0.5  # each read renders a service's metrics: a few milliseconds of its CPU
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=1.0) as client:
            while not self._stop.is_set():
                lags: dict[str, float] = {}
                for stage, (port_variable, gauge) in LAG_GAUGES.items():
                    with suppress(httpx.HTTPError):
                        answer = await client.get(f"http://127.0.0.1:{self.env[port_variable]}/metrics")
                        lags[stage] = sum(float(line.rsplit(" ", 1)[1]) for line in answer.text.splitlines()
                                          if line.startswith(gauge + "{"))
                self.samples.append((time.time(), lags))
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)

    def max_lag(self, since: float, until: float) -> dict[str, float]:
        """The largest lag each consumer had between the two times (epoch seconds)."""
        found: dict[str, float] = {}
        for at, lags in self.samples:
            if since <= at <= until:
                for stage, lag in lags.items():
                    found[stage] = max(found.get(stage, 0.0), lag)
        return found

    def by_second(self, since: float, until: float) -> dict[str, list[float]]:
        """Each consumer's largest lag in each whole second from ``since`` to ``until``."""
        seconds = max(0, math.ceil(until - since))
        found: dict[str, list[float]] = {stage: [0.0] * seconds for stage in LAG_GAUGES}
        for at, lags in self.samples:
            second = math.floor(at - since)
            if 0 <= second < seconds:
                for stage, lag in lags.items():
                    found[stage][second] = max(found[stage][second], lag)
        return found


async def metric_total(env: dict[str, str], port_variable: str, name: str) -> float | None:
    """The sum of a metric's samples on a service's /metrics (None when it does not answer)."""
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            answer = await client.get(f"http://127.0.0.1:{env[port_variable]}/metrics")
    except httpx.HTTPError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in answer.text.splitlines()
               if line.startswith((name + " ", name + "{")))
