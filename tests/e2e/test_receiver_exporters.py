"""A second real exporter, speaking OTLP/JSON: the OpenTelemetry JS logs SDK (node) sends to the real
receiver process, and its records arrive on the raw topic under the licence's tenant.

The npm packages are installed at test time (``npm ci`` from tests/e2e/otlp_js/package-lock.json) into
var/cache/, which git ignores; they are reused while the lock file is unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared import otlp
from shared.kafka import decode_headers
from tests.conftest import Infra, Topics
from tests.e2e.harness import Pipeline
from tests.integration.receiver.conftest import basic, read_topic

ROOT = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).resolve().parent / "otlp_js"


def installed_js_client() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        # Never a skip: `make test` installs Debian's nodejs and npm (target node-deps) when it can.
        pytest.fail("node and npm are needed for the OpenTelemetry JS exporter: apt-get install nodejs npm")
    lock = (CLIENT / "package-lock.json").read_bytes()
    target = ROOT / "var" / "cache" / f"otlp-js-{hashlib.sha256(lock).hexdigest()[:12]}"
    if not (target / "node_modules" / "@opentelemetry" / "exporter-logs-otlp-http").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(CLIENT / name, target / name)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=target, check=True,
                       timeout=300, capture_output=True)
    shutil.copy(CLIENT / "export_logs.cjs", target / "export_logs.cjs")
    return target


@pytest.fixture
async def receiver_only(infra: Infra, database_url: str, topics: Topics, tmp_path: Path) -> AsyncIterator[Pipeline]:
    pipe = Pipeline(database_url, infra.bootstrap, topics, tmp_path)
    pipe.start("receiver")
    try:
        yield pipe
    finally:
        pipe.stop()


@pytest.mark.parametrize("compression", ["none", "gzip"])
async def test_the_opentelemetry_js_exporter_speaking_otlp_json_delivers_to_the_raw_topic(
    receiver_only: Pipeline, compression: str
) -> None:
    client = await asyncio.to_thread(installed_js_client)
    token = await receiver_only.licence("acme", tenant="tenant-acme")
    env = {**os.environ, "OTLP_LOGS_URL": f"{receiver_only.url}/v1/logs", "OTLP_COMPRESSION": compression,
           "OTLP_AUTHORIZATION": basic("acme", token), "RECORD_COUNT": "45"}
    result = await asyncio.to_thread(subprocess.run, ["node", "export_logs.cjs"], cwd=client, env=env,
                                     capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "exported 45" in result.stdout

    messages = await read_topic(receiver_only.bootstrap, receiver_only.topics.raw_logs)
    assert len(messages) == 3  # batches of 20, 20 and 5
    names = []
    for message in messages:
        headers = decode_headers(message.headers)
        assert headers["content_type"] == "application/json"  # stored as received, decompressed
        assert (headers["tenant"], headers["org"]) == ("tenant-acme", "acme")
        request = otlp.decode_request(message.value, otlp.Encoding.JSON, otlp.ExportLogsServiceRequest)
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    names.append(record.body.string_value)
                    assert record.severity_number == 9
                    attributes = {a.key: a.value for a in record.attributes}
                    assert attributes["event.name"].string_value == "user_prompt"
                    assert attributes["cost_usd"].double_value == 0.25
    assert sorted(names, key=lambda n: int(n.split()[-1])) == [f"claude_code.user_prompt {i}" for i in range(45)]
