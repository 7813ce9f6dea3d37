"""Receiver benchmark: one real Hypercorn receiver process, a fresh broker, a separate load-generator process.

Usage: python -m tests.bench.bench_receiver [--duration 15] [--tenants 4] [--connections 32] [--json out.json]
(``make bench-receiver``); ``python -m tests.bench.bench_receiver --vs-rotel`` (``make bench-receiver-rotel``)
runs only the side-by-side comparison with Rotel (phase 5); ``python -m tests.bench.bench_receiver --hostile`` (``make bench-receiver-hostile``)
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

5. side by side with Rotel (``--vs-rotel`` runs only this): our receiver (tenant limit lifted) and Rotel, the
   Rust OpenTelemetry collector (``rotel`` wheel), each in turn on one pinned core (taskset), each against a
   fresh broker, the same bodies, the same closed-loop load generator with the same connections. Rotel runs
   ``otlp-http -> kafka`` with ``acks=all``. Reported for both: records/s, records per CPU-second (the
   server process's own user+system time, all its threads) and p99, and our/Rotel ratios. Rotel answers a
   request once it is queued for its batcher, before the broker acknowledges it; ours answers only after
   ``acks=all``, so the comparison favours Rotel on latency. Rotel also checks no licence, keeps no tenant
   limits and authenticates no batch, and packs ~16 requests into one Kafka message where ours sends each
   request's body as its own message. Both topics are read back afterwards: every record answered 200 must
   be there (Rotel with its default batch of 8,192 records would exceed the 1 MB message limit and drop
   everything while answering 200, so its batch is sized to fit). To see where the receiver's time goes,
   run ``py-spy record --pid <receiver pid>`` (py-spy is a dev dependency) during this phase.

6. hostile bodies (``--hostile``, also run at the end of the full benchmark): honest tenants at a steady
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
import importlib.util
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

from deploy.local.infra import free_port, start_broker, start_postgres, wait_for_port
from deploy.local.stack import wait_ready
from services.auditctl.licenses import store_license
from shared.db.migrate import apply_migrations
from shared.db.pool import connect
from shared.kafka import TopicSpec, ensure_topics
from shared.keys import Ed25519Signer
from shared.licensing import issue_license
from shared.messages.auth import provision_local_keys
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


def _pinned(command: list[str], core: int | None) -> list[str]:
    """The command on one core (all its threads), so records per CPU-second compare like for like."""
    return command if core is None else ["taskset", "--cpu-list", str(core), *command]


def server_core() -> int:
    """The last core: the load generator and the broker are left the others to share."""
    return max(0, (os.cpu_count() or 1) - 1)


def _start_receiver(env: Environment, extra: dict[str, str],
                    core: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
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
        # The receiver authenticates every raw batch it enqueues: it needs the raw topic's message key.
        "RAW_AUTH_KEY_FILE": provision_local_keys(env.work / "keys")["RAW_AUTH_KEY_FILE"],
        **extra,
    }
    log = (env.work / f"receiver-{port}.log").open("ab")
    process = subprocess.Popen(_pinned([sys.executable, "-m", "services.receiver"], core), cwd=ROOT,
                               env={**os.environ, **settings}, stdout=log, stderr=subprocess.STDOUT)
    wait_ready(f"http://127.0.0.1:{port}/readyz", 60)
    return process, port


def rotel_binary() -> Path:
    """The collector binary the ``rotel`` wheel ships beside its Python wrapper."""
    spec = importlib.util.find_spec("rotel")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the rotel wheel is not installed (pip install the dev dependencies)")
    return Path(next(iter(spec.submodule_search_locations))) / "rotel-agent"


KAFKA_MAX_MESSAGE_BYTES = 1_000_000  # the receiver's default and Rotel's: the production broker's limit


def rotel_batch_records(bodies: list[str]) -> int:
    """Rotel's batch size in records such that one batch fits one Kafka message.

    Rotel batches by record count (8,192 by default, ~8 MB of these records) and produces each batch as
    one message: over the 1 MB message limit it is refused and dropped, so with its defaults Rotel
    would "accept" everything and deliver nothing.
    """
    largest_record = max(Path(body).stat().st_size for body in bodies) / RECORDS_PER_BATCH
    return max(RECORDS_PER_BATCH, int(0.8 * KAFKA_MAX_MESSAGE_BYTES / largest_record))


def _start_rotel(env: Environment, core: int | None) -> tuple[subprocess.Popen[bytes], int]:
    """Rotel as a site reliability engineer would run it in front of Kafka: OTLP/HTTP in, Kafka out with
    acks=all, protobuf messages, batches that fit the message limit; everything on loopback."""
    port, grpc_port = free_port(), free_port()
    command = [
        str(rotel_binary()), "start",
        "--otlp-http-endpoint", f"127.0.0.1:{port}",
        "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
        "--exporter", "kafka",
        "--kafka-exporter-brokers", env.bootstrap,
        "--kafka-exporter-logs-topic", env.topic,
        "--kafka-exporter-format", "protobuf",
        "--kafka-exporter-acks", "all",
        "--kafka-exporter-max-message-bytes", str(KAFKA_MAX_MESSAGE_BYTES),
        "--logs-batch-max-size", str(rotel_batch_records(env.bodies)),
        "--pid-file", str(env.work / f"rotel-{port}.pid"),
        "--log-file", str(env.work / f"rotel-{port}.log"),
    ]
    log = (env.work / f"rotel-{port}.out").open("ab")
    process = subprocess.Popen(_pinned(command, core), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    wait_for_port("127.0.0.1", port, 30)
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
    server: str = "receiver"  # or "rotel"
    core: int | None = None  # pin the server to this core
    count_delivered: bool = False  # read the topic back afterwards and count the records in it


async def delivered_records(bootstrap: str, topic: str, partition_count: int) -> int:
    """Log records in the topic, read back and decoded: what a server accepted must also have arrived."""
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415
    from aiokafka.structs import TopicPartition  # noqa: PLC0415

    from shared import otlp  # noqa: PLC0415

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=4 * KAFKA_MAX_MESSAGE_BYTES)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, partition) for partition in range(partition_count)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        records = 0
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                for message in messages:
                    request = otlp.decode_request(message.value or b"", otlp.Encoding.PROTOBUF,
                                                  otlp.ExportLogsServiceRequest)
                    records += otlp.count_log_records(request)
        return records
    finally:
        await consumer.stop()


def _run_phase(env: Environment, args: argparse.Namespace, phase: Phase) -> dict[str, Any]:
    """A fresh broker and a fresh receiver for the phase: the in-memory broker slows as it fills, which a
    production Kafka (on disk) does not, so no phase inherits the previous one's data."""
    broker = start_broker(log_file=env.work / f"broker-{phase.name}.log")
    try:
        asyncio.run(ensure_topics(broker.bootstrap, [TopicSpec(env.topic, args.partitions)]))
        env.bootstrap, env.broker_pid = broker.bootstrap, broker.process.pid
        if phase.server == "rotel":
            receiver, port = _start_rotel(env, phase.core)
        else:
            receiver, port = _start_receiver(env, phase.receiver_settings, phase.core)
        try:
            result = _run_load(env, port, connections=phase.connections, duration=args.duration,
                               warmup=args.warmup, rate=phase.rate, receiver=receiver,
                               authorizations=phase.authorizations, bodies=phase.bodies,
                               records_per_body=phase.records_per_body)
        finally:
            result_code = _stop(receiver)
        result["receiver_exit_code"] = result_code
        if phase.count_delivered:
            # After the server stopped (Rotel flushes its batches on SIGTERM): every 200 must be in the topic.
            result["delivered_records"] = asyncio.run(delivered_records(broker.bootstrap, env.topic,
                                                                            args.partitions))
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


UNLIMITED_TENANTS = {"TENANT_RECORDS_PER_SECOND": "1e9", "TENANT_BURST_RECORDS": "1000000000"}


def _side(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "records_per_second": round(result["accepted_records_per_second"]),
        "records_per_cpu_second": result["accepted_records_per_receiver_cpu_second"],
        "p99_ms": result["latency_ok_ms"]["p99"],
        "p50_ms": result["latency_ok_ms"]["p50"],
        "statuses": result["statuses"],
        "cpu_share_of_one_core": result["cpu_share_of_one_core"]["receiver"],
        # Over the whole run (warm-up included), so at least the 200s' records of the measured window.
        "answered_200_records": result["answered_200_records"],
        "delivered_records": result["delivered_records"],
    }


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return round(ours / theirs, 3) if ours and theirs else None


def run_vs_rotel(env: Environment, args: argparse.Namespace) -> dict[str, Any]:
    """Our receiver and Rotel, each pinned to the same core in turn, same broker setup, bodies and load."""
    core = server_core()
    ours = _run_phase(env, args, Phase("vs-rotel-receiver", UNLIMITED_TENANTS, args.connections, 0, core=core,
                                                 count_delivered=True))
    theirs = _run_phase(env, args, Phase("vs-rotel-rotel", {}, args.connections, 0, server="rotel", core=core,
                                         count_delivered=True))
    receiver, reference = _side(ours), _side(theirs)
    return {
        "core": core,
        "connections": args.connections,
        "load_average_at_start": os.getloadavg(),
        "receiver": receiver,
        "rotel": reference,
        "ratio_records_per_second": _ratio(receiver["records_per_second"], reference["records_per_second"]),
        "ratio_records_per_cpu_second": _ratio(receiver["records_per_cpu_second"],
                                               reference["records_per_cpu_second"]),
        "ratio_p99": _ratio(receiver["p99_ms"], reference["p99_ms"]),
        "processes": {"receiver": ours["processes"], "rotel": theirs["processes"]},
    }


def vs_rotel_summary(comparison: dict[str, Any]) -> str:
    ours, theirs = comparison["receiver"], comparison["rotel"]
    ratio = comparison["ratio_records_per_cpu_second"]

    def row(name: str, side: dict[str, Any]) -> str:
        return (f"  {name:<9} {side['records_per_second']:>10,} records/s  {side['records_per_cpu_second'] or 0:>10,} "
                f"records/CPU-s  p99 {side['p99_ms']} ms  (CPU share {side['cpu_share_of_one_core']}, "
                f"statuses {side['statuses']}; over the whole run 200 for {side['answered_200_records']:,} records, "
                f"{side['delivered_records']:,} in the topic)")

    return "\n".join([
        f"side by side with Rotel (otlp-http -> kafka, acks=all), each on core {comparison['core']}, "
        f"{comparison['connections']} connections, load average at start "
        f"{comparison['load_average_at_start'][0]:.2f}:",
        row("receiver", ours),
        row("rotel", theirs),
        f"  receiver / rotel: records/s {comparison['ratio_records_per_second']}, records per CPU-second {ratio} "
        f"(target >= 1.0) {'PASS' if ratio is not None and ratio >= 1.0 else 'MISS'}, p99 {comparison['ratio_p99']}"
        f"; receiver p99 {ours['p99_ms']} ms (target <= 40) "
        f"{'PASS' if ours['p99_ms'] is not None and ours['p99_ms'] <= 40 else 'MISS'}",
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
            if args.vs_rotel:
                return {"vs_rotel": run_vs_rotel(env, args)}
            report: dict[str, Any] = {
                "machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
                "batch": {"records": RECORDS_PER_BATCH, "bytes": Path(bodies[0]).stat().st_size,
                          "tenants": args.tenants, "partitions": args.partitions},
            }
            unlimited = UNLIMITED_TENANTS
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
            report["vs_rotel"] = run_vs_rotel(env, args)
            report["hostile_bodies"] = run_hostile(env, args)
        finally:
            postgres.stop()
    return report


def summary(report: dict[str, Any]) -> str:
    if "vs_rotel" in report and "throughput" not in report:
        return vs_rotel_summary(report["vs_rotel"])
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
        vs_rotel_summary(report["vs_rotel"]),
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
    parser.add_argument("--vs-rotel", action="store_true",
                        help="only the side-by-side comparison with Rotel (records/s, records per CPU-second, p99)")
    args = parser.parse_args()
    report = run(args)
    publish(report, summary(report), args.json)


if __name__ == "__main__":
    main()
