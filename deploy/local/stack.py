"""``make run``: the whole pipeline on one machine, with embedded infrastructure where none is configured.

Usage: python -m deploy.local.stack run
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import asyncpg

from deploy.local.infra import infrastructure, start_postgres
from services.auditctl.licenses import store_license
from services.auditctl.settings import CliSettings
from services.auditctl.setup import ensure_key_files, topic_specs
from shared.db.migrate import apply_migrations
from shared.db.pool import connect
from shared.db.roles import ROLE_BY_COMPONENT, dsn_for_role
from shared.enrollment import enroll
from shared.kafka import ensure_topics
from shared.keys import load_signer
from shared.licensing import LicenseRefused, LicenseVerifier, issue_license
from shared.witness import witness_from_settings

SERVICES = ("receiver", "redactor", "signer", "reporter", "usage")
DEV_ORG = "dev"


@dataclass
class ServiceGroup:
    """Runs the services as child processes and stops every one of them, whatever happens.

    Each service connects to PostgreSQL as its own role (shared/db/privileges.sql): ``env``'s DATABASE_URL
    is the owner's, used here only to derive the service's, with the role as user and no password.
    """

    env: Mapping[str, str]
    log_dir: Path
    # Each service in a session of its own: where the kernel shares the CPUs between sessions first (Linux's
    # autogroup scheduling, on by default on desktops and many VMs), the services then get a share each, as
    # containers with their own CPU allowance do in production, instead of splitting one share between them
    # while the broker and the database (which run in sessions of their own) and every other session on the
    # machine get one each. The benchmarks use it; ``make run`` keeps its services in its own session.
    own_sessions: bool = False
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str, *extra_args: str) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        self._logs.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}", *extra_args],
            env=service_environment(self.env, name),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=self.own_sessions,
        )
        self.processes[name] = process
        return process

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)
        for log in self._logs:
            log.close()


def service_environment(env: Mapping[str, str], service: str) -> dict[str, str]:
    """``env`` for one service: its DATABASE_URL logs in as the service's own role."""
    service_env = dict(env)
    owner_dsn = env.get("DATABASE_URL")
    if owner_dsn and service in ROLE_BY_COMPONENT:
        service_env["DATABASE_URL"] = dsn_for_role(owner_dsn, ROLE_BY_COMPONENT[service])
    return service_env


def wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own loopback URL
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} was not ready after {timeout}s")


# Each Kafka consumer's /readyz port: the variable that sets it and its default.
CONSUMER_HEALTH_PORTS = {
    "redactor": ("REDACTOR_METRICS_PORT", 9465),
    "signer": ("SIGNER_METRICS_PORT", 9466),
    "usage": ("USAGE_METRICS_PORT", 9467),
}


def consumer_readiness_urls(env: Mapping[str, str], services: tuple[str, ...] = SERVICES) -> list[str]:
    """The /readyz of every consumer among ``services`` whose health port is on (a port of 0 turns it off)."""
    urls = []
    for name in services:
        if name in CONSUMER_HEALTH_PORTS:
            variable, default = CONSUMER_HEALTH_PORTS[name]
            port = int(env.get(variable, str(default)))
            if port:
                urls.append(f"http://127.0.0.1:{port}/readyz")
    return urls


def wait_pipeline_ready(env: Mapping[str, str], timeout: float, services: tuple[str, ...] = SERVICES) -> None:
    """Until the receiver answers and every consumer has joined its group and holds its partitions.

    A consumer reports ready only then, so an event accepted after this returns is processed at once
    rather than waiting for the groups to form.
    """
    deadline = time.monotonic() + timeout
    urls = consumer_readiness_urls(env, services)
    if "receiver" in services:
        urls.insert(0, f"http://127.0.0.1:{int(env.get('RECEIVER_PORT', '4318'))}/readyz")
    if "reporter" in services:
        urls.append(f"http://127.0.0.1:{int(env.get('REPORTER_PORT', '8080'))}/readyz")
    for url in urls:
        wait_ready(url, max(0.1, deadline - time.monotonic()))


async def prepare(settings: CliSettings) -> None:
    """Keys, schema and topics: everything the services expect to exist before they start."""
    ensure_key_files(settings)
    conn = await connect(settings.database_url)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    # The owner only migrates: the key is enrolled as auditctl would enrol it, as audit_admin.
    conn = await connect(admin_dsn(settings.database_url))
    try:
        await enroll_development_key(conn, settings)
    finally:
        await conn.close()
    await ensure_topics(settings.kafka_connection(), topic_specs(settings))


async def enroll_development_key(conn: asyncpg.Connection, settings: CliSettings) -> None:
    """What an operator does once per key with ``auditctl keys enroll``: the signer refuses a key no one enrolled."""
    if settings.signing_key_file:
        signer = load_signer(file=settings.signing_key_file)
        await enroll(conn, witness_from_settings(settings), signer.public_key, "make run development key")


def use_local_witness(var: Path) -> None:
    """The checkpoint witness and the pinned keys of ``make run`` (and ``make verify``) live under ``var/``,
    unless the environment names another witness."""
    if not os.environ.get("CHECKPOINT_WITNESS_S3_BUCKET"):
        os.environ.setdefault("CHECKPOINT_WITNESS_DIR", str(var / "witness"))


def cached_license(cache: Path, issuer_public_key: bytes) -> tuple[str, str] | None:
    """The licence an earlier run issued, as (licence id, key), if it still verifies."""
    if not cache.exists():
        return None
    token = cache.read_text().strip()
    try:
        lic = LicenseVerifier.from_public_keys([issuer_public_key]).verify(DEV_ORG, token, now=datetime.now(UTC))
    except LicenseRefused:
        return None
    return lic.license_id, token


def admin_dsn(owner_dsn: str) -> str:
    """The operator's connection (auditctl's role) to the database ``make run`` migrated as its owner."""
    return dsn_for_role(owner_dsn, ROLE_BY_COMPONENT["auditctl"])


async def development_license(settings: CliSettings, cached: tuple[str, str] | None) -> str:
    """Reuses the cached licence while the database still holds it unrevoked; otherwise issues a new one
    (as ``auditctl license issue`` would, with auditctl's role)."""
    if cached is not None:
        conn = await connect(admin_dsn(settings.database_url))
        try:
            active = await conn.fetchval(
                "SELECT count(*) FROM licenses WHERE license_id = $1 AND revoked_at IS NULL", cached[0]
            )
        finally:
            await conn.close()
        if active:
            return cached[1]
    lic, token = issue_license(load_signer(file=settings.license_issuer_key_file), org_id=DEV_ORG)
    await store_license(admin_dsn(settings.database_url), lic)
    return token


def claude_code_environment(endpoint: str, org: str, token: str) -> str:
    basic = base64.b64encode(f"{org}:{token}".encode()).decode()
    return "\n".join(
        [
            "export CLAUDE_CODE_ENABLE_TELEMETRY=1",
            "export OTEL_LOGS_EXPORTER=otlp",
            "export OTEL_METRICS_EXPORTER=otlp",
            "export OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
            f"export OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}",
            f'export OTEL_EXPORTER_OTLP_HEADERS="Authorization=Basic {basic}"',
            "export OTEL_LOG_USER_PROMPTS=1",
            "export OTEL_LOG_TOOL_DETAILS=1",
        ]
    )


def run() -> int:
    started = time.monotonic()
    var = Path(os.environ.get("LOCAL_STATE_DIR", "var"))
    var.mkdir(exist_ok=True)
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    use_local_witness(var)
    with infrastructure(var, ephemeral=False) as (dsn, bootstrap):
        env = {**os.environ, "DATABASE_URL": dsn, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
        os.environ.update(DATABASE_URL=dsn, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
        settings = CliSettings()
        asyncio.run(prepare(settings))
        # The message keys prepare() made: the receiver and redactors share the raw-batch key, the signers'
        # keyring accepts the redactors', the reporter's and auditctl's canonical keys, each for its own planes
        # only (a keyring from before scopes gets them). Named explicitly so every service reads the same files.
        env.update(RAW_AUTH_KEY_FILE=settings.raw_auth_key_file,
                   CANONICAL_AUTH_KEY_FILE=settings.canonical_auth_key_file,
                   REPORTER_ACCESS_AUTH_KEY_FILE=settings.reporter_access_auth_key_file,
                   AUDITCTL_EVENTS_AUTH_KEY_FILE=settings.auditctl_events_auth_key_file,
                   CANONICAL_AUTH_KEYRING_FILE=settings.canonical_auth_keyring_file)
        cache = var / "dev-license"
        issuer = load_signer(file=settings.license_issuer_key_file)
        token = asyncio.run(development_license(settings, cached_license(cache, issuer.public_key)))
        cache.write_text(token + "\n")
        group = ServiceGroup(env, var / "log")
        try:
            for name in SERVICES:
                group.start(name)
            port = int(env.get("RECEIVER_PORT", "4318"))
            reporter_port = int(env.get("REPORTER_PORT", "8080"))
            wait_pipeline_ready(env, 90)
            elapsed = time.monotonic() - started
            print(f"\nready in {elapsed:.1f}s: receiver http://127.0.0.1:{port}  database {dsn}  broker {bootstrap}")
            print(f"reports: http://127.0.0.1:{reporter_port}/portal/ (sign in with a reporting token: "
                  f"make -s token ORG={DEV_ORG} ROLE=admin | tail -1; the licence only ingests)")
            print(f"logs in {var / 'log'}/; Ctrl-C stops everything.")
            print(f"checkpoint witness and pinned keys: {os.environ.get('CHECKPOINT_WITNESS_DIR') or 'the bucket'}"
                  " (make verify reads them)\n")
            print("# Point Claude Code at it (development licence for org 'dev'):")
            print(claude_code_environment(f"http://127.0.0.1:{port}", DEV_ORG, token), flush=True)
            while not stop_requested:
                for name, process in group.processes.items():
                    if process.poll() is not None:
                        print(f"{name} exited with {process.returncode}; see {var / 'log' / name}.log; stopping")
                        stop_requested = True
                time.sleep(0.2)
        finally:
            print("stopping...", flush=True)
            group.stop_all()
    return 0


def with_database(command: list[str]) -> int:
    """Runs an operator command against the same database ``make run`` uses, starting it if need be.

    A configured DATABASE_URL is used as given; on the embedded database the command runs as audit_admin,
    the role auditctl is granted (the owner only migrates).
    """
    var = Path(os.environ.get("LOCAL_STATE_DIR", "var"))
    var.mkdir(exist_ok=True)
    use_local_witness(var)
    if os.environ.get("DATABASE_URL"):
        return subprocess.call(command)
    pg = start_postgres(var / "pgdata", ephemeral=False)
    try:
        asyncio.run(_migrate(pg.dsn))
        os.environ["DATABASE_URL"] = admin_dsn(pg.dsn)
        return subprocess.call(command)
    finally:
        pg.stop()


async def _migrate(dsn: str) -> None:
    conn = await connect(dsn)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()


USAGE = "usage: python -m deploy.local.stack run | with-db -- COMMAND..."

if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["run"]:
        sys.exit(run())
    if len(args) >= 3 and args[:2] == ["with-db", "--"]:
        sys.exit(with_database(args[2:]))
    sys.exit(USAGE)
