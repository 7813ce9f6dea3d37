"""Runs the real services as processes against the test's database and topics."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from deploy.local.infra import free_port
from deploy.local.stack import ServiceGroup, wait_ready
from services.auditctl.licenses import store_license
from shared.db.pool import connect
from shared.keys import Ed25519Signer, load_signer, write_new_key
from shared.licensing import issue_license
from shared.messages.auth import provision_local_keys
from shared.reporting_tokens import issue_token
from tests.conftest import Topics


@dataclass
class Pipeline:
    database_url: str
    bootstrap: str
    topics: Topics
    work_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    receiver_port: int = field(default_factory=free_port)
    group: ServiceGroup | None = None
    issuer: Ed25519Signer | None = None
    enrolled: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.receiver_port}"

    def env(self) -> dict[str, str]:
        keys = self.work_dir / "keys"
        return {
            **os.environ,
            **self.topics.env(),
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "RECEIVER_PORT": str(self.receiver_port),
            "RECEIVER_HOST": "127.0.0.1",
            "LICENSE_PUBLIC_KEYS_FILE": str(keys / "license-issuer.pub"),
            "SIGNING_KEY_FILE": str(keys / "signing.key"),
            # The trust anchors of this pipeline: its own witness directory, where the signing key is pinned.
            "CHECKPOINT_WITNESS_DIR": str(self.witness_dir),
            "CHECKPOINT_WITNESS_S3_BUCKET": "",
            "RECEIVER_METRICS_PORT": "0",
            "REDACTOR_METRICS_PORT": "0",
            "SIGNER_METRICS_PORT": "0",
            "REDACTOR_GROUP_ID": f"redactor-{self.topics.canonical}",
            "SIGNER_GROUP_ID": f"signer-{self.topics.canonical}",
            "REVOCATION_REFRESH_SECONDS": "0.5",
            # Short sessions: a group forms in a few seconds instead of fifteen.
            "KAFKA_SESSION_TIMEOUT_MS": "4000",
            **self.message_keys(),
            **self.extra_env,
        }

    def message_keys(self) -> dict[str, str]:
        """The run's message key files (tests/conftest.py names them), so that messages the test writes to a
        topic itself are accepted; a harness used on its own makes its own beside the other keys."""
        names = ("RAW_AUTH_KEY_FILE", "CANONICAL_AUTH_KEY_FILE", "REPORTER_ACCESS_AUTH_KEY_FILE",
                 "AUDITCTL_EVENTS_AUTH_KEY_FILE", "CANONICAL_AUTH_KEYRING_FILE")
        if all(name in os.environ for name in names):
            return {name: os.environ[name] for name in names}
        return provision_local_keys(self.work_dir / "keys")

    def prepare_keys(self) -> None:
        keys = self.work_dir / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        issuer_path = keys / "license-issuer.key"
        self.issuer = write_new_key(issuer_path) if not issuer_path.exists() else None
        if self.issuer is None:
            self.issuer = load_signer(file=str(issuer_path))
        (keys / "license-issuer.pub").write_text(base64.b64encode(self.issuer.public_key).decode() + "\n")
        if not (keys / "signing.key").exists():
            write_new_key(keys / "signing.key")
        if not self.enrolled:
            self.enroll_signing_key()

    @property
    def witness_dir(self) -> Path:
        return self.work_dir / "witness"

    def enroll_signing_key(self) -> None:
        """What an operator does before the signer's first start: the signer refuses a key no one enrolled."""
        key_file = str(self.work_dir / "keys" / "signing.key")
        result = subprocess.run(
            [sys.executable, "-m", "services.auditctl", "keys", "enroll", "--key-file", key_file],
            env=self.env(), capture_output=True, text=True, timeout=60, check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        self.enrolled = True

    async def licence(self, org: str, tenant: str | None = None, **kwargs: object) -> str:
        assert self.issuer is not None
        lic, token = issue_license(self.issuer, org_id=org, tenant_id=tenant, **kwargs)  # type: ignore[arg-type]
        await store_license(self.database_url, lic)
        return token

    async def token(self, org: str, role: str, *, tenant: str | None = None, email: str | None = None) -> str:
        """A reporting token, as `auditctl token issue` makes one."""
        conn = await connect(self.database_url)
        try:
            _, token = await issue_token(conn, tenant_id=tenant or org, org_id=org, role=role, user_email=email,
                                         expires_at=None, created_by="test")
        finally:
            await conn.close()
        return token

    def start(self, *services: str) -> None:
        self.prepare_keys()
        if self.group is None:
            self.group = ServiceGroup(self.env(), self.work_dir / "log")
        for name in services or ("receiver", "redactor", "signer"):
            self.group.start(name)
        if not services or "receiver" in services:
            wait_ready(f"{self.url}/readyz", 60)

    def kill(self, name: str) -> None:
        assert self.group is not None
        self.group.stop(name, signal.SIGKILL)

    def stop(self) -> None:
        if self.group is not None:
            self.group.stop_all()

    def log_of(self, name: str) -> str:
        path = self.work_dir / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def post(
        self, path: str, body: bytes, *, org: str, token: str, content_type: str, content_encoding: str | None = None
    ) -> httpx.Response:
        headers = {
            "Content-Type": content_type,
            "Authorization": "Basic " + base64.b64encode(f"{org}:{token}".encode()).decode(),
        }
        if content_encoding:
            headers["Content-Encoding"] = content_encoding
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.post(self.url + path, content=body, headers=headers)

    async def wait_for_rows(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        """The rows once there are ``count``, each with its content (kept apart in audit_content for rows of
        hash version 2) under ``content``."""
        deadline = time.monotonic() + timeout
        conn = await connect(self.database_url)
        try:
            while True:
                rows = await conn.fetch(
                    "SELECT a.*, coalesce(c.content, a.content) AS kept_content FROM audit_logs a"
                    " LEFT JOIN audit_content c USING (tenant_id, chain_seq) ORDER BY tenant_id, chain_seq")
                if len(rows) >= count or time.monotonic() > deadline:
                    return [{**dict(r), "content": r["kept_content"]} for r in rows]
                await asyncio.sleep(0.2)
        finally:
            await conn.close()


@contextmanager
def running_with_reporter(pipe: Pipeline, *also: str) -> Iterator[Pipeline]:
    """The pipeline's core services, then ``also`` and the reporter (on ``REPORTER_PORT`` of its extra_env, a
    free local port unless the test chose one); yields once the reporter is ready and stops them all after."""
    pipe.extra_env.setdefault("REPORTER_PORT", str(free_port()))
    pipe.extra_env.setdefault("REPORTER_HOST", "127.0.0.1")
    pipe.start()
    assert pipe.group is not None
    for name in (*also, "reporter"):
        pipe.group.start(name)
    try:
        wait_ready(f"http://127.0.0.1:{pipe.extra_env['REPORTER_PORT']}/readyz", 60)
        yield pipe
    finally:
        pipe.stop()


async def get_json_until(client: httpx.AsyncClient, path: str, ready: Callable[[Any], bool],
                         timeout: float = 60) -> Any:
    """The JSON body of GET ``path`` once it answers 200 with a body ``ready`` accepts (the reporter shows
    what the pipeline has chained so far, so a test asks again until it is all there)."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(path)
        body = response.json() if response.status_code == 200 else None
        if body is not None and ready(body):
            return body
        assert time.monotonic() < deadline, f"{path}: {response.status_code} {response.text[:500]}"
        await asyncio.sleep(0.3)
