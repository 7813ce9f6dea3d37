"""Every bad input gets its status code and a well-formed body, nothing reaches the raw topic, and the
receiver stays healthy. One real receiver (Hypercorn) for the whole table, against the real broker and
PostgreSQL; the topic is read back after every row."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from services.auditctl.licenses import revoke_license
from shared import otlp
from shared.keys import Ed25519Signer
from shared.licensing import REPORTING, issue_license
from tests.conftest import Infra
from tests.integration.receiver.conftest import LiveReceiver, basic, days_ago, live_receiver
from tests.unit.receiver.payloads import log_body, log_request, logs_answer, records_in

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


@dataclass
class Credentials:
    good: str
    expired: str
    revoked: str
    not_entitled: str
    unknown_issuer: str
    other_org: str


@dataclass(frozen=True)
class BadInput:
    name: str
    status: int
    body: bytes = b""
    content_type: str | None = PROTOBUF
    credentials: str = "good"  # a Credentials field, or "none"
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False


def _bomb() -> bytes:
    # 200 MiB of zeros is about 200 KiB gzipped: a thousandfold expansion.
    return gzip.compress(b"\0" * (200 * 1024 * 1024), 9)


ROWS = [
    BadInput("truncated protobuf", 400, log_body(5)[:-11]),
    BadInput("invalid JSON", 400, b'{"resourceLogs": [{"scopeLogs": ', JSON),
    BadInput("JSON with wrong types", 400,
             b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": 5}}]}]}]}', JSON),
    BadInput("JSON with a string where a list belongs", 400, b'{"resourceLogs": "everything"}', JSON),
    BadInput("gzip bomb", 413, _bomb(), headers={"Content-Encoding": "gzip"}),
    BadInput("truncated gzip", 400, gzip.compress(log_body(5))[:-20], headers={"Content-Encoding": "gzip"}),
    BadInput("empty body", 200, b""),
    BadInput("wrong content type", 415, log_body(2), "text/plain"),
    BadInput("no content type", 415, log_body(2), None),
    BadInput("unsupported content encoding", 415, log_body(2), headers={"Content-Encoding": "br"}),
    BadInput("body over the limit, chunked", 413, b"\x0a" * (17 * 1024 * 1024), chunked=True),
    BadInput("broken base64 in Basic", 401, log_body(2), credentials="broken_base64"),
    BadInput("no credentials", 401, log_body(2), credentials="none"),
    BadInput("unknown org (licence from an unknown issuer)", 401, log_body(2), credentials="unknown_issuer"),
    BadInput("Basic user differs from the licence's org", 401, log_body(2), credentials="other_org"),
    BadInput("expired licence", 403, log_body(2), credentials="expired"),
    BadInput("revoked licence", 403, log_body(2), credentials="revoked"),
    BadInput("licence without the OTEL ingest entitlement", 403, log_body(2), credentials="not_entitled"),
    BadInput("bad credentials with a JSON body", 401, b"{}", JSON, credentials="other_org"),
]


@pytest.fixture(scope="module")
async def table_env(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[
        tuple[LiveReceiver, Credentials]]:
    async with live_receiver(infra, tmp_path_factory.mktemp("bad-inputs")) as receiver:
        _, good = await receiver.licence("acme", "tenant-acme")
        _, expired = await receiver.licence("acme", "tenant-acme", now=days_ago(10), valid_for=timedelta(days=1))
        revoked_licence, revoked = await receiver.licence("acme", "tenant-acme")
        _, not_entitled = await receiver.licence("acme", "tenant-acme", entitlements=[REPORTING])
        _, foreign = issue_license(Ed25519Signer.generate(), org_id="nobody")
        assert await revoke_license(receiver.database_url, revoked_licence.license_id, "test") == "revoked"
        await receiver.wait_for_revocations_refresh()
        yield receiver, Credentials(
            good=basic("acme", good), expired=basic("acme", expired), revoked=basic("acme", revoked),
            not_entitled=basic("acme", not_entitled), unknown_issuer=basic("nobody", foreign),
            other_org=basic("globex", good))


def _decode_status(response: httpx.Response) -> status_pb2.Status:
    status = status_pb2.Status()
    if response.headers["content-type"] == JSON:
        json_format.Parse(response.content, status)
    else:
        assert response.headers["content-type"] == PROTOBUF
        status.ParseFromString(response.content)
    return status


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
async def test_bad_input_is_refused_cleanly(table_env: tuple[LiveReceiver, Credentials], row: BadInput) -> None:
    receiver, credentials = table_env
    headers = dict(row.headers)
    if row.content_type:
        headers["Content-Type"] = row.content_type
    if row.credentials == "broken_base64":
        headers["Authorization"] = "Basic %%%not base64%%%"
    elif row.credentials != "none":
        headers["Authorization"] = getattr(credentials, row.credentials)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(row.body), 256 * 1024):
            yield row.body[start:start + 256 * 1024]

    response = await receiver.client.post("/v1/logs", content=chunks() if row.chunked else row.body, headers=headers)

    assert response.status_code == row.status, response.content[:300]
    answer_type = row.content_type if row.content_type in (PROTOBUF, JSON) else PROTOBUF
    assert response.headers["content-type"] == answer_type
    if row.status == 200:
        assert logs_answer(response) == otlp.logs_response()
    else:
        status = _decode_status(response)
        assert status.message
        assert status.code != code_pb2.OK
    if row.status == 401:
        assert response.headers["www-authenticate"].startswith("Basic")
    assert await receiver.raw_logs() == [], "nothing may be enqueued for a refused request"
    await receiver.assert_healthy()


async def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(
    table_env: tuple[LiveReceiver, Credentials],
) -> None:
    """Like a client that sends ``Expect: 100-continue``: the answer comes from the headers alone."""
    receiver, credentials = table_env
    host, port = receiver.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write((f"POST /v1/logs HTTP/1.1\r\nHost: {host}\r\nContent-Type: {PROTOBUF}\r\n"
                  f"Authorization: {credentials.good}\r\nContent-Length: {64 * 1024 * 1024}\r\n\r\n").encode())
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status_line.split()[1] == b"413"
    assert await receiver.raw_logs() == []
    await receiver.assert_healthy()


async def test_a_record_over_the_kafka_limit_is_refused_alone_and_the_rest_accepted(
    infra: Infra, tmp_path: Path
) -> None:
    async with live_receiver(infra, tmp_path) as receiver:
        _, token = await receiver.licence("acme", "tenant-acme")
        body = log_body(5, big_record_at=3, big_size=5 * 1024 * 1024)
        response = await receiver.client.post("/v1/logs", content=gzip.compress(body), headers={
            "Content-Type": PROTOBUF, "Content-Encoding": "gzip", "Authorization": basic("acme", token)})
        assert response.status_code == 200
        answer = logs_answer(response)
        assert answer.partial_success.rejected_log_records == 1
        assert "message limit" in answer.partial_success.error_message
        messages = await receiver.raw_logs()
        stored = [name for message in messages for name in records_in(message.value)]
        assert stored == [name for i, name in enumerate(records_in(body)) if i != 3]
        assert all(len(message.value) < receiver.settings.kafka_max_message_bytes for message in messages)
        await receiver.assert_healthy()


async def test_json_body_and_partial_success_answer_in_json(infra: Infra, tmp_path: Path) -> None:
    async with live_receiver(infra, tmp_path, max_records_per_request=2) as receiver:
        _, token = await receiver.licence("acme", "tenant-acme")
        body = json_format.MessageToJson(log_request(3)).encode()
        response = await receiver.client.post("/v1/logs", content=body, headers={
            "Content-Type": "application/json; charset=utf-8", "Authorization": basic("acme", token)})
        assert response.status_code == 200
        document = json.loads(response.content)
        assert int(document["partialSuccess"]["rejectedLogRecords"]) == 1
        [message] = await receiver.raw_logs()
        assert records_in(message.value) == records_in(log_body(2))
