"""Good traffic through a real receiver to the real raw topics: real exporters, real captures, chunked
bodies, headers, and per-tenant order."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from shared import otlp
from shared.kafka import decode_headers
from shared.messages import raw_batch
from tests.integration.receiver.conftest import LiveReceiver, basic, read_topic
from tests.messages_support import raw_keyring
from tests.unit.receiver.payloads import log_body, records_in

CAPTURES = [
    ("logs-tool-session.pb", "application/x-protobuf", None),
    ("logs-tool-session.json.gz", "application/json", "gzip"),
    ("logs-tool-session-nocontent.pb.gz", "application/x-protobuf", "gzip"),
    ("logs-api-error.pb", "application/x-protobuf", None),
]


def _export_with_the_python_sdk(url: str, authorization: str, count: int) -> None:
    """The OpenTelemetry Python SDK's own OTLP/HTTP protobuf exporter, as an application would use it."""
    provider = LoggerProvider(resource=Resource.create({"service.name": "claude-code", "service.version": "test"}))
    exporter = OTLPLogExporter(endpoint=f"{url}/v1/logs", headers={"Authorization": authorization},
                               compression=Compression.Gzip, timeout=10)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_export_batch_size=25))
    logger = logging.getLogger("claude_code.sdk-test")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logger.addHandler(handler)
    try:
        for index in range(count):
            # A telemetry attribute naming another org must not decide tenancy.
            logger.info("claude_code.user_prompt %d", index, extra={"event.name": "user_prompt",
                                                                     "organization.id": "globex",
                                                                     "event.sequence": index})
        assert provider.force_flush(10_000)
    finally:
        logger.removeHandler(handler)
        provider.shutdown()


async def test_the_opentelemetry_python_sdk_exporter_delivers_to_the_raw_topic(receiver: LiveReceiver) -> None:
    _, token = await receiver.licence("acme", "tenant-acme")
    await asyncio.to_thread(_export_with_the_python_sdk, receiver.url, basic("acme", token), 60)
    messages = await receiver.raw_logs()
    bodies = [name for message in messages for name in records_in(message.value)]
    assert sorted(bodies, key=lambda b: int(b.split()[-1])) == [f"claude_code.user_prompt {i}" for i in range(60)]
    for message in messages:
        headers = decode_headers(message.headers)
        assert (headers["tenant"], headers["org"], message.key) == ("tenant-acme", "acme", b"tenant-acme")
        assert headers["content_type"] == "application/x-protobuf"
    metrics = receiver.metrics_text()
    assert 'otelcol_receiver_accepted_log_records_total{receiver="otlp",tenant="tenant-acme",transport="http"} 60.0' \
        in metrics


async def test_real_claude_code_captures_arrive_whole(receiver: LiveReceiver, fixtures_dir: Path) -> None:
    _, token = await receiver.licence("acme", "tenant-acme")
    expected = 0
    for name, content_type, encoding in CAPTURES:
        raw = (fixtures_dir / name).read_bytes()
        headers = {"Content-Type": content_type, "Authorization": basic("acme", token)}
        if encoding:
            headers["Content-Encoding"] = encoding
        response = await receiver.client.post("/v1/logs", content=raw, headers=headers)
        assert response.status_code == 200, (name, response.content)
        assert response.headers["content-type"] == content_type
        body = gzip.decompress(raw) if encoding else raw
        expected += otlp.count_log_records(otlp.decode_request(body, otlp.media_type(content_type),  # type: ignore[arg-type]
                                                               otlp.ExportLogsServiceRequest))
    metrics_body = (fixtures_dir / "metrics-tool-session.pb").read_bytes()
    response = await receiver.client.post("/v1/metrics", content=metrics_body, headers={
        "Content-Type": "application/x-protobuf", "Authorization": basic("acme", token)})
    assert response.status_code == 200
    messages = await receiver.raw_logs()
    assert len(messages) == len(CAPTURES)
    assert sum(int(decode_headers(m.headers)["record_count"]) for m in messages) == expected
    for message, (name, content_type, encoding) in zip(
            sorted(messages, key=lambda m: m.offset), CAPTURES, strict=True):
        raw = (fixtures_dir / name).read_bytes()
        assert message.value == (gzip.decompress(raw) if encoding else raw)  # decompressed, otherwise as sent
        assert decode_headers(message.headers)["content_type"] == content_type
    [metric_message] = await read_topic(receiver.bootstrap, receiver.topics.raw_metrics)
    assert metric_message.value == metrics_body


async def test_chunked_requests_without_content_length_work(receiver: LiveReceiver) -> None:
    _, token = await receiver.licence("acme", "tenant-acme")
    body = log_body(30, text="chunked " * 50)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 999):
            yield body[start:start + 999]

    response = await receiver.client.post("/v1/logs", content=chunks(), headers={
        "Content-Type": "application/x-protobuf", "Authorization": basic("acme", token)})
    assert response.status_code == 200
    [message] = await receiver.raw_logs()
    assert message.value == body


async def test_each_tenant_keeps_its_order_on_one_partition(receiver: LiveReceiver) -> None:
    tokens = {}
    for org in ("acme", "globex", "initech"):
        _, tokens[org] = await receiver.licence(org, f"tenant-{org}")
    sent: dict[str, list[str]] = {org: [] for org in tokens}
    for round_ in range(8):
        for org, token in tokens.items():
            response = await receiver.client.post("/v1/logs", content=log_body(2, text=f"{org}-{round_}"), headers={
                "Content-Type": "application/x-protobuf", "Authorization": basic(org, token)})
            assert response.status_code == 200
            sent[org].append(response.headers["x-request-id"])
    messages = await receiver.raw_logs()
    for org in tokens:
        mine = [m for m in messages if decode_headers(m.headers)["org"] == org]
        assert len({m.partition for m in mine}) == 1
        assert [decode_headers(m.headers)["request_id"] for m in sorted(mine, key=lambda m: m.offset)] == sent[org]
        assert {decode_headers(m.headers)["tenant"] for m in mine} == {f"tenant-{org}"}


async def test_message_headers_describe_the_batch(receiver: LiveReceiver) -> None:
    lic, token = await receiver.licence("acme", "tenant-acme")
    response = await receiver.client.post("/v1/logs", content=log_body(7), headers={
        "Content-Type": "application/x-protobuf", "Authorization": basic("acme", token)})
    [message] = await receiver.raw_logs()
    headers = decode_headers(message.headers)
    assert headers == {
        "tenant": "tenant-acme", "org": "acme", "license_id": lic.license_id,
        "content_type": "application/x-protobuf", "received_at": headers["received_at"],
        "request_id": response.headers["x-request-id"], "record_count": "7", "chunk": "1/1",
        "auth.key_id": headers["auth.key_id"], "auth.mac": headers["auth.mac"],
    }
    # Authenticated over all of them and the payload, with the key only the redactors share.
    batch = raw_batch.decode(message.value, message.headers, raw_keyring(), "logs")
    assert (batch.tenant, batch.record_count, batch.request_id) == ("tenant-acme", 7, headers["request_id"])
    assert int(headers["received_at"]) > 1_700_000_000 * 10**9
    assert json.loads((await receiver.client.get("/readyz")).content)["broker"] is True
