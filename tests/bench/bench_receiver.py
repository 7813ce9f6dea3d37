"""Receiver benchmark: one real Hypercorn receiver process, a fresh broker, a separate load-generator process.

Usage: python -m tests.bench.bench_receiver [--duration 15] [--tenants 4] [--connections 24] [--json out.json]
(``make bench-receiver``); ``python -m tests.bench.bench_receiver --hostile`` (``make bench-receiver-hostile``)
runs only the hostile-body comparison below.

Phases, each against a receiver and a broker started for it (the broker is in-memory and keeps
everything, so every phase starts a new one; PostgreSQL, for licences, is started once per run):

1. throughput: closed loop, many connections, per-tenant limits out of the way -> accepted records/s.
2. half load: open loop at half the target rate (25,000 records/s) -> p50/p99 latency, measured from
   when each request was due.
3. overload: open loop at twice the measured maximum, the default per-tenant limits, many connections,
   one tenant sending half of the traffic -> the excess must come back as 429 (that tenant) and 503
   (the server), and the receiver's peak RSS must stay bounded. Clients honour Retry-After, as OTLP
   exporters do (tests/bench/http_load.py).
4. overload with large bodies: 8 connections sending ~15.5 MB batches (just under the 16 MiB limit,
   each split into ~16 Kafka messages) as fast as they are answered -> peak RSS, the memory worst case.

5. hostile bodies (``--hostile``, also run at the end of the full benchmark): honest tenants at a steady
   open-loop rate while one tenant sends, as fast as it is answered, (a) nothing, (b) honest ~1 MB JSON
   bodies gzipped, (c) the review's 1 MB ``{"resourceLogs":[{},{},…]}`` gzipped to ~1 KB. Reported side by
   side from the same run: the honest tenants' p99 in each case, and the receiver CPU per request of (b)
   and (c): the ratio c/b must not exceed 1.

Payloads: Claude Code-shaped protobuf batches of 50 records averaging 1 KiB, built from the real
captures (tests/bench/payloads.py). The producer uses acks=all and the production message limit.
RSS and CPU of the receiver (and CPU of the broker and the load generator) are sampled with psutil,
so the report shows where the machine's cores went.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from google.protobuf import json_format

from deploy.local.infra import free_port, start_broker, start_postgres
from deploy.local.stack import wait_ready
from shared.cli.licenses import store_license
from shared.db.migrate import apply_migrations
from shared.db.pool import connect
from shared.kafka import TopicSpec, ensure_topics
from shared.keys import Ed25519Signer
from shared.licensing import issue_license
from tests.bench.http_load import Config
from tests.bench.payloads import build_batches
from tests.bench.report import publish

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FIXTURES = Path(os.environ.get("AUDIT_FIXTURES_DIR", ROOT.parent / "shared" / "fixtures" / "claude-code-2.1.332"))
TARGET_RECORDS_PER_SECOND = 50_000
RECORDS_PER_BATCH = 50
LARGE_BATCH_RECORDS = 15_000  # about 15.5 MB of protobuf
HOSTILE_HONEST_RATE = 100.0  # honest requests/s (5,000 records/s) while one tenant sends hostile bodies


@dataclass
class ProcessSample:
    peak_rss_mb: float = 0.0
    cpu_seconds: float = 0.0


class Sampler:
    """Samples RSS (peak) and CPU time of a few processes every 50 ms on a background thread."""

    def __init__(self, processes: dict[str, int]) -> None:
        self._processes = {name: psutil.Process(pid) for name, pid in processes.items()}
        self._start_cpu = {name: self._cpu(p) for name, p in self._processes.items()}
        self._last_cpu = dict(self._start_cpu)
        self.samples = {name: ProcessSample() for name in processes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        try:
            times = process.cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for name, process in self._processes.items():
                try:
                    rss = process.memory_info().rss / 1024 / 1024
                    cpu = self._cpu(process)
                except psutil.Error:
                    continue  # it has exited: keep what was last seen
                sample = self.samples[name]
                sample.peak_rss_mb = max(sample.peak_rss_mb, rss)
                self._last_cpu[name] = cpu

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for name, process in self._processes.items():
            last = max(self._last_cpu[name], self._cpu(process))
            self.samples[name].cpu_seconds = round(last - self._start_cpu[name], 2)
            self.samples[name].peak_rss_mb = round(self.samples[name].peak_rss_mb, 1)


@dataclass
class Environment:
    work: Path
    dsn: str
    bootstrap: str
    broker_pid: int
    topic: str
    public_keys: Path
    authorizations: list[str]
    bodies: list[str]


async def _prepare_database(dsn: str, issuer: Ed25519Signer, tenants: int) -> list[str]:
    conn = await connect(dsn)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    authorizations = []
    for index in range(tenants):
        org = f"bench-org-{index}"
        lic, token = issue_license(issuer, org_id=org, tenant_id=f"bench-tenant-{index}")
        await store_license(dsn, lic)
        authorizations.append("Basic " + base64.b64encode(f"{org}:{token}".encode()).decode())
    return authorizations


def _start_receiver(env: Environment, extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    settings = {
        "DATABASE_URL": env.dsn,
        "KAFKA_BOOTSTRAP_SERVERS": env.bootstrap,
        "TOPIC_RAW_LOGS": env.topic,
        "RECEIVER_HOST": "127.0.0.1",
        "RECEIVER_PORT": str(port),
        "RECEIVER_METRICS_PORT": "0",  # the phases read their figures from the load generator and the sampler
        "LICENSE_PUBLIC_KEYS_FILE": str(env.public_keys),
        "LOG_LEVEL": "WARNING",
        **extra,
    }
    log = (env.work / f"receiver-{port}.log").open("ab")
    process = subprocess.Popen([sys.executable, "-m", "services.receiver"], cwd=ROOT,
                               env={**os.environ, **settings}, stdout=log, stderr=subprocess.STDOUT)
    wait_ready(f"http://127.0.0.1:{port}/readyz", 60)
    return process, port


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.terminate()
    try:
        return process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _run_load(env: Environment, port: int, *, connections: int, duration: float, warmup: float, rate: float,
              receiver: subprocess.Popen[bytes], authorizations: list[str] | None = None,
              bodies: list[str] | None = None, records_per_body: int = RECORDS_PER_BATCH) -> dict[str, Any]:
    config = Config(host="127.0.0.1", port=port, path="/v1/logs", bodies=bodies or env.bodies,
                    records_per_body=records_per_body, authorizations=authorizations or env.authorizations,
                    connections=connections, duration=duration, warmup=warmup, rate=rate)
    config_file = env.work / f"load-{port}-{int(rate)}.json"
    result_file = config_file.with_suffix(".result.json")
    config_file.write_text(json.dumps(asdict(config)))
    generator = subprocess.Popen([sys.executable, "-m", "tests.bench.http_load", str(config_file), str(result_file)],
                                 cwd=ROOT)
    with Sampler({"receiver": receiver.pid, "broker": env.broker_pid, "load_generator": generator.pid}) as sampler:
        if generator.wait(duration + warmup + 120) != 0:
            raise RuntimeError("the load generator failed")
    result: dict[str, Any] = json.loads(result_file.read_text())
    result["processes"] = {name: asdict(sample) for name, sample in sampler.samples.items()}
    wall = duration + warmup
    result["cpu_share_of_one_core"] = {name: round(sample.cpu_seconds / wall, 2)
                                       for name, sample in sampler.samples.items()}
    # Less noisy than records/s on a shared machine: what one fully available core would sustain.
    receiver_cpu = sampler.samples["receiver"].cpu_seconds
    ok = result["statuses"].get("200", 0) * records_per_body
    result["accepted_records_per_receiver_cpu_second"] = round(ok * wall / duration / receiver_cpu) if receiver_cpu else None
    return result


@dataclass
class Phase:
    name: str
    receiver_settings: dict[str, str]
    connections: int
    rate: float
    authorizations: list[str] | None = None
    bodies: list[str] | None = None
    records_per_body: int = RECORDS_PER_BATCH


def _run_phase(env: Environment, args: argparse.Namespace, phase: Phase) -> dict[str, Any]:
    """A fresh broker and a fresh receiver for the phase: the in-memory broker slows as it fills, which a
    production Kafka (on disk) does not, so no phase inherits the previous one's data."""
    broker = start_broker(log_file=env.work / f"broker-{phase.name}.log")
    try:
        asyncio.run(ensure_topics(broker.bootstrap, [TopicSpec(env.topic, args.partitions)]))
        env.bootstrap, env.broker_pid = broker.bootstrap, broker.process.pid
        receiver, port = _start_receiver(env, phase.receiver_settings)
        try:
            result = _run_load(env, port, connections=phase.connections, duration=args.duration,
                               warmup=args.warmup, rate=phase.rate, receiver=receiver,
                               authorizations=phase.authorizations, bodies=phase.bodies,
                               records_per_body=phase.records_per_body)
        finally:
            result_code = _stop(receiver)
        result["receiver_exit_code"] = result_code
        return result
    finally:
        broker.stop()


def _generator(env: Environment, port: int, name: str, config: Config) -> tuple[subprocess.Popen[bytes], Path]:
    config_file = env.work / f"load-{port}-{name}.json"
    result_file = config_file.with_suffix(".result.json")
    config_file.write_text(json.dumps(asdict(config)))
    process = subprocess.Popen([sys.executable, "-m", "tests.bench.http_load", str(config_file), str(result_file)],
                               cwd=ROOT)
    return process, result_file


def _hostile_case(env: Environment, args: argparse.Namespace, attacker_body: Path | None,
                  content_type: str) -> dict[str, Any]:
    """Honest tenants at a steady rate, plus (unless None) one tenant sending ``attacker_body`` flat out."""
    broker = start_broker(log_file=env.work / "broker-hostile.log")
    try:
        asyncio.run(ensure_topics(broker.bootstrap, [TopicSpec(env.topic, args.partitions)]))
        env.bootstrap, env.broker_pid = broker.bootstrap, broker.process.pid
        # The honest tenants' own limits are out of the way; the attacker keeps the default limits.
        receiver, port = _start_receiver(env, {})
        try:
            honest = Config(host="127.0.0.1", port=port, path="/v1/logs", bodies=env.bodies,
                            records_per_body=RECORDS_PER_BATCH, authorizations=env.authorizations[1:],
                            connections=16, duration=args.duration, warmup=args.warmup, rate=HOSTILE_HONEST_RATE)
            generators = {"honest": _generator(env, port, "honest", honest)}
            if attacker_body is not None:
                attacker = Config(host="127.0.0.1", port=port, path="/v1/logs", bodies=[str(attacker_body)],
                                  records_per_body=0, authorizations=env.authorizations[:1], connections=4,
                                  duration=args.duration, warmup=args.warmup, rate=0, honour_retry_after=False,
                                  content_type=content_type, content_encoding="gzip")
                generators["attacker"] = _generator(env, port, "attacker", attacker)
            with Sampler({"receiver": receiver.pid}) as sampler:
                for process, _ in generators.values():
                    if process.wait(args.duration + args.warmup + 120) != 0:
                        raise RuntimeError("a load generator failed")
        finally:
            _stop(receiver)
        results = {name: json.loads(path.read_text()) for name, (_, path) in generators.items()}
        wall = args.duration + args.warmup
        case: dict[str, Any] = {
            "honest_latency_ok_ms": results["honest"]["latency_ok_ms"],
            "honest_statuses": results["honest"]["statuses"],
            "receiver_cpu_share_of_one_core": round(sampler.samples["receiver"].cpu_seconds / wall, 2),
            "receiver_peak_rss_mb": sampler.samples["receiver"].peak_rss_mb,
        }
        if "attacker" in results:
            statuses = results["attacker"]["statuses"]
            requests = sum(statuses.values()) * wall / args.duration  # over the whole run, as the CPU is
            case["attacker_statuses"] = statuses
            case["attacker_requests"] = requests
            case["receiver_cpu_seconds"] = sampler.samples["receiver"].cpu_seconds
        return case
    finally:
        broker.stop()


def _hostile_bodies(work: Path, fixtures: Path) -> tuple[Path, Path]:
    """The review's body, and an honest JSON body of the same decompressed size; both gzipped."""
    empty = json.dumps({"resourceLogs": [{}] * 333_330}, separators=(",", ":")).encode()  # 1 MB
    (work / "hostile.json.gz").write_bytes(gzip.compress(empty))
    records = 200
    while True:
        (batch,) = build_batches(fixtures, count=1, records_per_batch=records)
        request = otlp_request(batch.body)
        honest = json_format.MessageToJson(request, indent=None).encode()
        if len(honest) >= len(empty):
            break
        records = int(records * len(empty) / len(honest)) + 1
    (work / "honest.json.gz").write_bytes(gzip.compress(honest))
    return work / "hostile.json.gz", work / "honest.json.gz"


def otlp_request(body: bytes) -> Any:
    from shared import otlp  # noqa: PLC0415

    return otlp.decode_request(body, otlp.Encoding.PROTOBUF, otlp.ExportLogsServiceRequest)


def run_hostile(env: Environment, args: argparse.Namespace) -> dict[str, Any]:
    hostile, honest = _hostile_bodies(env.work, args.fixtures)
    cases = {
        "baseline": _hostile_case(env, args, None, "application/json"),
        "honest_1mb_json": _hostile_case(env, args, honest, "application/json"),
        "hostile_1mb_json": _hostile_case(env, args, hostile, "application/json"),
    }
    # The attacker's cost: the receiver CPU above the baseline case (the same honest load alone).
    base_cpu = cases["baseline"]["receiver_cpu_share_of_one_core"] * (args.duration + args.warmup)
    for name in ("honest_1mb_json", "hostile_1mb_json"):
        case = cases[name]
        extra = max(0.0, case.pop("receiver_cpu_seconds") - base_cpu)
        case["receiver_cpu_ms_per_attacker_request"] = (
            round(1000 * extra / case["attacker_requests"], 3) if case["attacker_requests"] else None)
    honest_cost = cases["honest_1mb_json"]["receiver_cpu_ms_per_attacker_request"]
    hostile_cost = cases["hostile_1mb_json"]["receiver_cpu_ms_per_attacker_request"]
    return {
        "cases": cases,
        "decompressed_bytes": len(gzip.decompress(hostile.read_bytes())),
        "gzipped_bytes": {"hostile": hostile.stat().st_size, "honest": honest.stat().st_size},
        "hostile_over_honest_cpu_per_request": (
            round(hostile_cost / honest_cost, 3) if hostile_cost is not None and honest_cost else None),
    }


def hostile_summary(hostile: dict[str, Any]) -> str:
    cases = hostile["cases"]
    ratio = hostile["hostile_over_honest_cpu_per_request"]
    return "\n".join([
        f"hostile bodies ({hostile['decompressed_bytes']:,} bytes of JSON; gzipped: hostile "
        f"{hostile['gzipped_bytes']['hostile']:,}, honest {hostile['gzipped_bytes']['honest']:,}):",
        *(f"  {name}: honest tenants' p99 {case['honest_latency_ok_ms']['p99']} ms, p50 "
          f"{case['honest_latency_ok_ms']['p50']} ms; attacker statuses {case.get('attacker_statuses', '-')}; "
          f"receiver CPU per attacker request {case.get('receiver_cpu_ms_per_attacker_request', '-')} ms"
          for name, case in cases.items()),
        f"  receiver CPU per request, hostile / honest of the same size: {ratio} (must be <= 1) "
        f"{'PASS' if ratio is not None and ratio <= 1 else 'MISS'}",
    ])


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as tmp:
        work = Path(tmp)
        postgres = start_postgres(work / "pgdata", ephemeral=True)
        try:
            issuer = Ed25519Signer.generate()
            public_keys = work / "license-issuer.pub"
            public_keys.write_text(base64.b64encode(issuer.public_key).decode() + "\n")
            authorizations = asyncio.run(_prepare_database(postgres.dsn, issuer, args.tenants))
            bodies = []
            for index, batch in enumerate(build_batches(args.fixtures, count=64, records_per_batch=RECORDS_PER_BATCH)):
                path = work / f"body-{index}.pb"
                path.write_bytes(batch.body)
                bodies.append(str(path))
            env = Environment(work, postgres.dsn, "", 0, "bench.otel.logs.raw", public_keys, authorizations, bodies)
            if args.hostile:
                return {"hostile_bodies": run_hostile(env, args)}
            report: dict[str, Any] = {
                "machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
                "batch": {"records": RECORDS_PER_BATCH, "bytes": Path(bodies[0]).stat().st_size,
                          "tenants": args.tenants, "partitions": args.partitions},
            }
            unlimited = {"TENANT_RECORDS_PER_SECOND": "1e9", "TENANT_BURST_RECORDS": "1000000000"}
            report["throughput"] = _run_phase(env, args, Phase("throughput", unlimited, args.connections, 0))
            maximum = report["throughput"]["accepted_records_per_second"]
            half_rate = TARGET_RECORDS_PER_SECOND / 2 / RECORDS_PER_BATCH
            report["half_load"] = _run_phase(env, args, Phase("half-load", unlimited, args.connections, half_rate))
            # One noisy tenant sends half of everything: its excess must come back as 429, the server's as 503.
            noisy = [authorizations[0]] * (len(authorizations) - 1) + authorizations[1:]
            overload_rate = max(2 * maximum, TARGET_RECORDS_PER_SECOND) / RECORDS_PER_BATCH
            report["overload"] = _run_phase(env, args, Phase("overload", {}, args.overload_connections,
                                                             overload_rate, noisy))
            # The worst case for memory: bodies just under the 16 MiB limit, each split into ~16 messages.
            large = []
            for index, batch in enumerate(build_batches(args.fixtures, count=2, records_per_batch=LARGE_BATCH_RECORDS)):
                path = work / f"large-{index}.pb"
                path.write_bytes(batch.body)
                large.append(str(path))
            report["overload_large_bodies"] = _run_phase(env, args, Phase(
                "overload-large", unlimited, 8, 0, bodies=large, records_per_body=LARGE_BATCH_RECORDS))
            report["hostile_bodies"] = run_hostile(env, args)
        finally:
            postgres.stop()
    return report


def summary(report: dict[str, Any]) -> str:
    if "throughput" not in report:
        return hostile_summary(report["hostile_bodies"])
    throughput, half, overload = report["throughput"], report["half_load"], report["overload"]
    large = report["overload_large_bodies"]
    accepted = throughput["accepted_records_per_second"]
    p99 = half["latency_ok_ms"]["p99"]
    rss = overload["processes"]["receiver"]["peak_rss_mb"]
    refused = {k: v for k, v in overload["statuses"].items() if k != "200"}
    lines = [
        f"accepted log records/s (closed loop, {throughput['connections']} connections): {accepted:,.0f} "
        f"(target >= {TARGET_RECORDS_PER_SECOND:,}) {'PASS' if accepted >= TARGET_RECORDS_PER_SECOND else 'MISS'}",
        f"  latency at that load: p50 {throughput['latency_ok_ms']['p50']} ms, p99 {throughput['latency_ok_ms']['p99']} ms",
        f"  CPU (share of one core): {throughput['cpu_share_of_one_core']}; accepted records per receiver "
        f"CPU-second: {throughput['accepted_records_per_receiver_cpu_second']:,}; load average at start "
        f"{report['machine']['load_average_at_start'][0]:.2f}",
        f"half load ({half['offered_requests_per_second'] * RECORDS_PER_BATCH:,.0f} records/s offered): "
        f"p50 {half['latency_ok_ms']['p50']} ms, p99 {p99} ms (target < 50) "
        f"{'PASS' if p99 is not None and p99 < 50 else 'MISS'}; statuses {half['statuses']}",
        f"overload ({overload['offered_requests_per_second'] * RECORDS_PER_BATCH:,.0f} records/s offered, "
        f"{overload['connections']} connections): accepted {overload['accepted_records_per_second']:,.0f} records/s,"
        f" refused {refused}, peak receiver RSS {rss} MB (target < 200) {'PASS' if rss < 200 else 'MISS'}",
        f"  latency from when due (includes clients waiting out Retry-After): {overload['latency_all_ms']}; "
        f"client backlog dropped "
        f"{overload['client_backlog_dropped']}, connection errors {overload['connection_errors']}",
        f"peak receiver RSS: throughput {throughput['processes']['receiver']['peak_rss_mb']} MB, "
        f"half load {half['processes']['receiver']['peak_rss_mb']} MB",
        f"overload with ~15.5 MB bodies (8 connections): peak receiver RSS {large['processes']['receiver']['peak_rss_mb']}"
        f" MB {'PASS' if large['processes']['receiver']['peak_rss_mb'] < 200 else 'MISS'}; statuses {large['statuses']}",
        hostile_summary(report["hostile_bodies"]),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring, per phase")
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--overload-connections", type=int, default=256)
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    parser.add_argument("--json", type=Path, default=None, help="also write the full report here")
    parser.add_argument("--hostile", action="store_true",
                        help="only the hostile-body comparison (honest tenants' p99; CPU per request vs honest)")
    args = parser.parse_args()
    report = run(args)
    publish(report, summary(report), args.json)


if __name__ == "__main__":
    main()
