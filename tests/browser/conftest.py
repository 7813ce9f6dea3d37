"""A real reporter process over a seeded database, and Debian's Chromium driven by Playwright.

Chromium is never downloaded: Playwright is pointed at the system binary (``CHROMIUM``, default
/usr/bin/chromium, installed by ``make test`` through ``make browser-deps``). If it is missing the tests fail,
loudly: a skipped browser test would read as a passing one in CI.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.local.infra import free_port
from deploy.local.stack import ServiceGroup, wait_ready
from shared.db.pool import connect
from shared.keys import Ed25519Signer
from shared.reporting_tokens import ADMIN, ANALYST, AUDITOR, DEVELOPER, issue_token
from tests.conftest import Infra, Topics
from tests.integration.reporter.scenario import ALICE, ORG_A, TENANT_A, Scenario, seed

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", Path(__file__).resolve().parents[2] / "test-artifacts"))


@dataclass
class Portal:
    url: str
    org: str
    tokens: dict[str, str]  # a reporting token per role; the developer is Alice
    scenario: Scenario


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if path is None:
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make browser-deps` (apt-get install chromium) "
                    "or set CHROMIUM to a Chromium binary", pytrace=False)
    return path


@pytest.fixture
def artifacts() -> Path:
    folder = ARTIFACTS / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def issuer() -> Ed25519Signer:
    return Ed25519Signer.generate()


@pytest.fixture
def reporter_process(database_url: str, tmp_path: Path, issuer: Ed25519Signer, infra: Infra,
                     topics: Topics) -> Iterator[str]:
    keys = tmp_path / "license-issuer.pub"
    keys.write_text(base64.b64encode(issuer.public_key).decode() + "\n")
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "REPORTER_PORT": str(port), "REPORTER_HOST": "127.0.0.1",
           "LICENSE_PUBLIC_KEYS_FILE": str(keys), "REPORTER_VERIFY_INTERVAL_SECONDS": "0.5",
           "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap, **topics.env()}
    group = ServiceGroup(env, tmp_path / "log")
    group.start("reporter")
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        group.stop_all()


@pytest.fixture
async def portal(database_url: str, reporter_process: str, issuer: Ed25519Signer) -> AsyncIterator[Portal]:
    conn = await connect(database_url)
    try:
        scenario = await seed(conn)
        tokens = {}
        for role in (ADMIN, AUDITOR, ANALYST, DEVELOPER):
            _, tokens[role] = await issue_token(conn, tenant_id=TENANT_A, org_id=ORG_A, role=role,
                                                user_email=ALICE if role == DEVELOPER else None, expires_at=None,
                                                created_by="browser test")
    finally:
        await conn.close()
    yield Portal(reporter_process, ORG_A, tokens, scenario)
