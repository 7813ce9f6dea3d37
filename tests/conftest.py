"""Shared fixtures. Integration and end-to-end tests get a real PostgreSQL and a real Kafka-wire broker:
the ones named by DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS, or embedded ones started for this run."""

from __future__ import annotations

import asyncio
import base64
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from deploy.local.infra import Broker, Postgres, start_broker, start_postgres
from shared.db.migrate import apply_migrations
from shared.db.pool import connect
from shared.kafka import TopicSpec, ensure_topics
from shared.keys import Ed25519Signer
from shared.messages.auth import provision_local_keys

# The real Claude Code captures live beside the checkout, in ../shared (read-only, not part of this repo).
FIXTURES = Path(
    os.environ.get(
        "AUDIT_FIXTURES_DIR",
        Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "claude-code-2.1.332",
    )
)


# Message keys (raw batches, canonical events) for every service a test starts, in process or as a process.
_MESSAGE_KEYS = tempfile.TemporaryDirectory(prefix="audit-test-message-keys-")
for _name, _path in provision_local_keys(Path(_MESSAGE_KEYS.name)).items():
    os.environ.setdefault(_name, _path)


def pytest_sessionstart(session: pytest.Session) -> None:
    # The name gazetteer is derived once per machine (about 15 s, cached): do it before any service a test
    # starts has to, so no test's time budget pays for it.
    from shared.pii.names import load_gazetteer  # noqa: PLC0415 - only when tests run

    load_gazetteer()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        if f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
        if f"{os.sep}e2e{os.sep}" in path:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.exists():
        pytest.fail(f"real Claude Code captures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def work_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="audit-test-") as path:
        yield Path(path)


# Tests of what detection finds give it time to finish: on a loaded machine the production budget (250 ms a
# field) can run out, and the engine then withholds the field, which is right in service and noise in a test.
DETECTION_BUDGET_FOR_TESTS_MS = 60_000.0


@dataclass
class Infra:
    server_dsn: str
    bootstrap: str
    broker: Broker | None
    postgres: Postgres | None


@pytest.fixture(scope="session")
def infra(work_dir: Path) -> Iterator[Infra]:
    postgres = broker = None
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        postgres = start_postgres(work_dir / "pgdata", ephemeral=True)
        dsn = postgres.dsn
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = start_broker(log_file=work_dir / "broker.log")
        bootstrap = broker.bootstrap
    try:
        yield Infra(dsn, bootstrap, broker, postgres)
    finally:
        if broker:
            broker.stop()
        if postgres:
            postgres.stop()


def _with_database(dsn: str, name: str) -> str:
    """Same server, another database: tests never touch the data of a configured DATABASE_URL."""
    if "?" in dsn:
        base, query = dsn.split("?", 1)
        return f"{base.rsplit('/', 1)[0]}/{name}?{query}"
    return f"{dsn.rsplit('/', 1)[0]}/{name}"


async def create_database(server_dsn: str) -> str:
    name = f"audit_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = _with_database(server_dsn, name)
    conn = await connect(dsn)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    return dsn


@pytest.fixture
async def database_url(infra: Infra) -> str:
    """A freshly migrated database of its own for each test."""
    return await create_database(infra.server_dsn)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The database owner (a superuser), as tests use it to set scenes and to tamper like an attacker with
    superuser rights would: with triggers off, so the append-only trigger on audit_logs and
    chain_checkpoints does not stand in the way of the tampering verify must catch. Services never
    connect like this (see tests/integration/test_db_privileges.py)."""
    conn = await connect(database_url)
    await conn.execute("SET session_replication_role = replica")
    try:
        yield conn
    finally:
        await conn.close()


@dataclass(frozen=True)
class Topics:
    raw_logs: str
    raw_metrics: str
    canonical: str
    dead_letter: str

    def env(self) -> dict[str, str]:
        return {
            "TOPIC_RAW_LOGS": self.raw_logs,
            "TOPIC_RAW_METRICS": self.raw_metrics,
            "TOPIC_CANONICAL": self.canonical,
            "TOPIC_DEAD_LETTER": self.dead_letter,
        }


async def make_topics(bootstrap: str, partitions: int = 3) -> Topics:
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(f"raw-logs-{suffix}", f"raw-metrics-{suffix}", f"canonical-{suffix}", f"dlq-{suffix}")
    await ensure_topics(
        bootstrap,
        [
            TopicSpec(topics.raw_logs, partitions),
            TopicSpec(topics.raw_metrics, partitions),
            TopicSpec(topics.canonical, partitions),
            TopicSpec(topics.dead_letter, 1),
        ],
    )
    return topics


@pytest.fixture
async def topics(infra: Infra) -> Topics:
    """Fresh topics for each test, so tests never see each other's messages."""
    return await make_topics(infra.bootstrap)


@pytest.fixture
def signing_key() -> Ed25519Signer:
    return Ed25519Signer.generate()


def basic_auth(org: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{org}:{token}".encode()).decode()


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    return asyncio.DefaultEventLoopPolicy()
