"""Dead letters with the real services: list, inspect without content in clear, requeue once the cause is
fixed (twice changes nothing), and the exporter's depth gauges."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx

from deploy.local.infra import free_port
from services.auditctl.ops.deadletter import read_dead_letters
from services.auditctl.ops.reader import TopicReader
from shared.kafka import make_producer
from shared.pipeline import dead_letter_headers
from tests.conftest import Infra, Topics
from tests.e2e.harness import Pipeline
from tests.e2e.ops_support import PII, all_chains_verify, auditctl, chained_ids, event_ids, start_auditctl
from tests.messages_support import raw_headers

TENANT, ORG = "tenant-dl", "dl-org"
CAPTURE = [("logs-api-error.pb", "application/x-protobuf", None)]


async def _end_offsets(bootstrap: str, topic: str) -> int:
    async with TopicReader(bootstrap) as reader:
        return sum(end for _, end in (await reader.bounds(topic, await reader.partitions(topic))).values())


def _dlq_list(env: dict[str, str]) -> list[dict[str, object]]:
    result = auditctl(env, "dlq", "list", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


async def test_dead_letters_list_inspect_requeue_once_and_export_depth(
        infra: Infra, database_url: str, topics: Topics, tmp_path: Path, fixtures_dir: Path) -> None:
    pipe = Pipeline(database_url, infra.bootstrap, topics, tmp_path,
                    extra_env={"TOPIC_DEAD_LETTER_REQUEUED": f"{topics.dead_letter}.requeued"})
    pipe.start()
    producer = make_producer(infra.bootstrap, 1_000_000)
    await producer.start()
    try:
        env = pipe.env()
        # 1. A real dead letter: a raw message without the receiver's tenant headers; the redactor refuses it.
        await (await producer.send(topics.raw_logs, b"not otlp", key=b"x", headers=[("request_id", b"r-bad")]))
        # 2. A batch a since-fixed bug had dead-lettered: a valid capture with the receiver's headers, as the
        #    redactor writes dead letters (shared.pipeline.dead_letter_headers).
        body = (fixtures_dir / CAPTURE[0][0]).read_bytes()
        # Its original headers carry the receiver's authentication, which the requeue keeps.
        original = raw_headers(body, tenant=TENANT, org=ORG, license_id="lic-1", request_id="r-good", record_count=6)
        await (await producer.send(topics.dead_letter, body, key=TENANT.encode(), headers=dead_letter_headers(
            topics.raw_logs, 0, 41, "RuntimeError: mapping bug (fixed in 1.2.3)", "redactor", original)))

        deadline = time.monotonic() + 30
        async with TopicReader(infra.bootstrap) as reader:  # wait for the redactor's dead letter
            while time.monotonic() < deadline:
                if len(await read_dead_letters(reader, topics.dead_letter)) >= 2:
                    break
                await asyncio.sleep(0.2)
        letters = _dlq_list(env)
        assert len(letters) == 2, letters
        bad = next(letter for letter in letters if letter["request_id"] == "r-bad")
        good = next(letter for letter in letters if letter["request_id"] == "r-good")
        assert bad["stage"] == "redactor" and "no tenant header" in str(bad["error"]) and bad["requeued_at"] is None
        assert good["tenant"] == TENANT and good["records"] == 6

        inspect = auditctl(env, "dlq", "inspect", str(good["ref"]), "--json")
        assert inspect.returncode == 0, inspect.stderr
        report = json.loads(inspect.stdout)
        assert report["dead_letter"]["error"].startswith("RuntimeError: mapping bug")
        assert report["dead_letter"]["source"] == f"{topics.raw_logs}/0/41"
        assert report["original_headers"]["tenant"] == TENANT
        assert report["payload"]["decodable"] == "yes" and report["payload"]["log_records"] == 6
        assert report["payload"]["event_names"]["plugin_loaded"] == 3
        human = auditctl(env, "dlq", "inspect", str(good["ref"]))
        for text in (inspect.stdout, human.stdout):
            for secret in PII:
                assert secret not in text  # the content is never shown in clear
            assert "Bearer" not in text and body[:64].decode("latin-1") not in text

        # Requeue the fixed one: the pipeline chains its events.
        first = auditctl(env, "dlq", "requeue", str(good["ref"]))
        assert first.returncode == 0 and "requeued 1 dead letter" in first.stdout, first.stdout + first.stderr
        expected = event_ids(fixtures_dir, CAPTURE, TENANT, ORG)
        await pipe.wait_for_rows(len(expected))
        assert set(await chained_ids(database_url)) == expected

        # Twice: the marker makes it a no-op; nothing is even sent to the raw topic.
        raw_end = await _end_offsets(infra.bootstrap, topics.raw_logs)
        second = auditctl(env, "dlq", "requeue", str(good["ref"]))
        assert second.returncode == 0 and "requeued 0" in second.stdout and "already requeued (skipped): 1" in \
            second.stdout, second.stdout
        assert await _end_offsets(infra.bootstrap, topics.raw_logs) == raw_end
        dry = auditctl(env, "dlq", "requeue", "--all", "--dry-run")
        assert "would requeue 1 dead letter" in dry.stdout and str(bad["ref"]) in dry.stdout, dry.stdout
        rows = await chained_ids(database_url)
        assert len(rows) == len(expected) and await all_chains_verify(database_url)
        listed = {str(letter["ref"]): letter for letter in _dlq_list(env)}
        assert listed[str(good["ref"])]["requeued_at"] and not listed[str(bad["ref"])]["requeued_at"]

        # The exporter: two retained, one (the unfixable one) not requeued: the alerting gauge says 1.
        port = free_port()
        exporter = start_auditctl(env, "dlq", "exporter", "--port", str(port), "--interval", "0.5")
        try:
            text = ""
            async with httpx.AsyncClient(timeout=2) as client:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.2)
                assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
            source = f'source_topic="{topics.raw_logs}",stage="redactor"'
            assert f"audit_deadletter_messages{{{source}}} 2.0" in text, text
            assert f"audit_deadletter_unrequeued_messages{{{source}}} 1.0" in text, text
            assert 'audit_deadletter_end_offset{partition="0"} 2.0' in text, text
        finally:
            exporter.send_signal(signal.SIGTERM)
            assert exporter.wait(20) == 0, exporter.stderr.read() if exporter.stderr else ""
    finally:
        await producer.stop()
        pipe.stop()
