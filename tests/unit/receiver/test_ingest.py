"""The receiver's OTLP/HTTP behaviour against a fake producer and a fake clock (no broker needed)."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from google.rpc import code_pb2

from shared import otlp
from shared.keys import Ed25519Signer
from shared.licensing import REPORTING, issue_license
from tests.unit.receiver.conftest import Harness, HarnessFactory, basic
from tests.unit.receiver.payloads import (
    json_document,
    log_body,
    log_json,
    log_request,
    logs_answer,
    metric_request,
    metrics_answer,
    records_in,
    retry_delay_of,
    status_of,
)


@pytest.fixture
async def receiver(make_harness: HarnessFactory) -> Harness:
    harness: Harness = await make_harness()
    return harness


async def test_protobuf_batch_is_enqueued_as_received_with_licence_tenancy(receiver: Harness) -> None:
    body = log_body(3)
    response = await receiver.post(body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert response.content == b""  # ExportLogsServiceResponse with partial_success unset
    assert response.headers["x-request-id"]
    [sent] = receiver.producer.sent
    assert sent.value == body
    assert sent.key == b"tenant-acme"
    assert sent.topic == receiver.settings.topic_raw_logs
    assert sent.headers["tenant"] == "tenant-acme"
    assert sent.headers["org"] == "acme"
    assert sent.headers["content_type"] == "application/x-protobuf"
    assert sent.headers["record_count"] == "3"
    assert sent.headers["request_id"] == response.headers["x-request-id"]
    assert sent.headers["received_at"] == str(int(receiver.clock.wall.timestamp()) * 10**9)
    assert sent.headers["license_id"]


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
async def test_json_batch_answers_in_json(receiver: Harness, content_type: str) -> None:
    response = await receiver.post(log_json(2), content_type=content_type)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert json_document(response) == {}
    [sent] = receiver.producer.sent
    assert sent.headers["content_type"] == "application/json"
    assert records_in(sent.value, "application/json") == records_in(log_body(2))


async def test_gzip_body_is_inflated_before_enqueueing(receiver: Harness) -> None:
    body = log_body(4)
    response = await receiver.post(gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert receiver.producer.sent[0].value == body


async def test_json_follows_the_otlp_rules(receiver: Harness) -> None:
    document = {
        "resourceLogs": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "claude-code"}}]},
            "someFutureField": {"nested": [1, 2]},
            "scopeLogs": [{"logRecords": [
                {"timeUnixNano": "1795878787316000000", "severityNumber": 9, "traceId": "5B8EFFF798038103D269B633813FC60C",
                 "spanId": "eee19b7ec3c1b174", "body": {"stringValue": "a"},
                 "attributes": [{"key": "n", "value": {"intValue": "42"}}]},
                {"timeUnixNano": 1795878787316000001, "body": {"stringValue": "b"},
                 "attributes": [{"key": "n", "value": {"intValue": 7}}]},
            ]}],
        }]
    }
    response = await receiver.post(json.dumps(document).encode(), content_type="application/json")
    assert response.status_code == 200, response.content
    request = otlp.decode_request(receiver.producer.sent[0].value, otlp.Encoding.JSON, otlp.ExportLogsServiceRequest)
    first, second = request.resource_logs[0].scope_logs[0].log_records
    assert first.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert first.span_id.hex() == "eee19b7ec3c1b174"
    assert first.severity_number == 9
    assert first.attributes[0].value.int_value == 42
    assert second.time_unix_nano == 1795878787316000001
    assert second.attributes[0].value.int_value == 7


async def test_json_leniency_snake_case_names_and_enum_names_are_accepted(receiver: Harness) -> None:
    document = {"resource_logs": [{"scope_logs": [{"log_records": [
        {"severity_number": "SEVERITY_NUMBER_WARN", "trace_id": "5b8efff798038103d269b633813fc60c",
         "body": {"string_value": "legacy"}}]}]}]}
    response = await receiver.post(json.dumps(document).encode(), content_type="application/json")
    assert response.status_code == 200
    request = otlp.decode_request(receiver.producer.sent[0].value, otlp.Encoding.JSON, otlp.ExportLogsServiceRequest)
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    assert (record.severity_number, record.body.string_value) == (13, "legacy")
    assert record.trace_id.hex() == "5b8efff798038103d269b633813fc60c"


@pytest.mark.parametrize("body", [b"", None])
async def test_empty_request_is_a_success_and_enqueues_nothing(receiver: Harness, body: bytes | None) -> None:
    payload = body if body is not None else otlp.ExportLogsServiceRequest().SerializeToString()
    response = await receiver.post(payload)
    assert response.status_code == 200
    assert receiver.producer.sent == []
    empty_json = await receiver.post(b"{}", content_type="application/json")
    assert empty_json.status_code == 200
    assert json_document(empty_json) == {}


async def test_records_over_the_per_request_cap_are_refused_through_partial_success(
    make_harness: HarnessFactory,
) -> None:
    receiver: Harness = await make_harness(max_records_per_request=5)
    response = await receiver.post(log_body(8))
    assert response.status_code == 200
    answer = logs_answer(response)
    assert answer.partial_success.rejected_log_records == 3
    assert "limit of 5" in answer.partial_success.error_message
    [sent] = receiver.producer.sent
    assert records_in(sent.value) == records_in(log_body(5))
    assert sent.headers["record_count"] == "5"


async def test_a_record_larger_than_a_kafka_message_is_refused_and_the_rest_accepted(
    make_harness: HarnessFactory,
) -> None:
    receiver: Harness = await make_harness(kafka_max_message_bytes=64 * 1024)
    body = log_body(6, big_record_at=2, big_size=200_000)
    response = await receiver.post(body)
    assert response.status_code == 200
    answer = logs_answer(response)
    assert answer.partial_success.rejected_log_records == 1
    assert "message limit" in answer.partial_success.error_message
    stored = [name for sent in receiver.producer.sent for name in records_in(sent.value)]
    assert stored == [name for i, name in enumerate(records_in(body)) if i != 2]
    assert all(len(sent.value) <= 64 * 1024 for sent in receiver.producer.sent)
    assert {sent.headers["chunk"] for sent in receiver.producer.sent} == {"1/1"}


async def test_a_batch_over_the_message_limit_is_split_in_order(make_harness: HarnessFactory) -> None:
    receiver: Harness = await make_harness(kafka_max_message_bytes=20_000)
    body = log_body(200, text="x" * 300)
    response = await receiver.post(body)
    assert response.status_code == 200
    assert response.content == b""
    sent = receiver.producer.sent
    assert len(sent) > 1
    assert [s.headers["chunk"] for s in sent] == [f"{i}/{len(sent)}" for i in range(1, len(sent) + 1)]
    assert len({s.headers["request_id"] for s in sent}) == 1
    assert all(s.key == b"tenant-acme" for s in sent)
    assert [name for s in sent for name in records_in(s.value)] == records_in(body)
    assert sum(int(s.headers["record_count"]) for s in sent) == 200


async def test_telemetry_claiming_another_org_does_not_change_tenancy(receiver: Harness) -> None:
    body = log_body(2, attributes={"organization.id": "globex", "tenant": "globex", "user.email": "x@globex.test"})
    response = await receiver.post(body, auth=receiver.auth("acme", "tenant-acme"))
    assert response.status_code == 200
    [sent] = receiver.producer.sent
    assert (sent.headers["tenant"], sent.headers["org"], sent.key) == ("tenant-acme", "acme", b"tenant-acme")


@pytest.mark.parametrize(
    ("content_type", "encoding", "reason"),
    [
        ("text/plain", None, "Content-Type"),
        (None, None, "Content-Type"),
        ("application/grpc", None, "Content-Type"),
        ("application/x-protobuf", "br", "Content-Encoding"),
        ("application/x-protobuf", "deflate", "Content-Encoding"),
    ],
)
async def test_unsupported_media_is_415(receiver: Harness, content_type: str | None, encoding: str | None,
                                        reason: str) -> None:
    headers = {"Authorization": receiver.auth()["Authorization"]}
    if content_type:
        headers["Content-Type"] = content_type
    if encoding:
        headers["Content-Encoding"] = encoding
    response = await receiver.client.post("/v1/logs", content=log_body(1), headers=headers)
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/x-protobuf"
    assert reason in status_of(response).message
    assert receiver.producer.sent == []


@pytest.mark.parametrize(
    ("body", "content_type", "headers"),
    [
        (log_body(3)[:-7], "application/x-protobuf", {}),
        (b"\xff\xff\xff\xff", "application/x-protobuf", {}),
        (b'{"resourceLogs": [', "application/json", {}),
        (b'{"resourceLogs": {"not": "a list"}}', "application/json", {}),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}', "application/json", {}),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "not-hex"}]}]}]}', "application/json", {}),
        (b"[1, 2]", "application/json", {}),
        (gzip.compress(log_body(3))[:-9], "application/x-protobuf", {"Content-Encoding": "gzip"}),
        (b"definitely not gzip", "application/x-protobuf", {"Content-Encoding": "gzip"}),
    ],
    ids=["truncated-protobuf", "garbage-protobuf", "invalid-json", "json-wrong-type", "json-bad-int64",
         "json-bad-trace-id", "json-not-object", "truncated-gzip", "not-gzip"],
)
async def test_malformed_bodies_are_400_with_bad_request_details(
    receiver: Harness, body: bytes, content_type: str, headers: dict[str, str]
) -> None:
    response = await receiver.post(body, content_type=content_type, headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == content_type
    status = status_of(response)
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert len(status.details) == 1
    assert "Retry-After" not in response.headers
    assert receiver.producer.sent == []


async def test_body_over_the_limit_is_413_whether_declared_or_streamed(make_harness: HarnessFactory) -> None:
    receiver: Harness = await make_harness(max_body_bytes=10_000, max_in_flight_bytes=100_000)
    declared = await receiver.post(log_body(100, text="y" * 200))
    assert declared.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        body = log_body(100, text="y" * 200)
        for start in range(0, len(body), 1000):
            yield body[start:start + 1000]

    streamed = await receiver.client.post("/v1/logs", content=chunks(), headers={
        "Content-Type": "application/x-protobuf", **receiver.auth()})
    assert streamed.status_code == 413
    assert "limit" in status_of(streamed).message
    assert receiver.producer.sent == []


async def test_gzip_bomb_is_413_without_inflating_past_the_limit(make_harness: HarnessFactory) -> None:
    receiver: Harness = await make_harness(max_body_bytes=1024 * 1024, max_in_flight_bytes=4 * 1024 * 1024)
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), 9)  # 64 MiB of zeros in ~64 KiB
    response = await receiver.post(bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "after decompression" in status_of(response).message
    assert receiver.app.state.ingest.budget.used == 0
    assert receiver.producer.sent == []


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "no_credentials"),
        ("Bearer abc", "bad_scheme"),
        ("Basic !!!not-base64!!!", "bad_base64"),
        ("Basic " + "YWNtZQ==", "bad_credentials"),  # "acme", no colon
        (basic("acme", "lic1.garbage.token"), "malformed"),
    ],
)
async def test_untrustworthy_credentials_are_401_with_a_basic_challenge(
    receiver: Harness, authorization: str | None, reason: str
) -> None:
    auth = {} if authorization is None else {"Authorization": authorization}
    response = await receiver.post(log_body(1), auth=auth)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert status_of(response).code == code_pb2.UNAUTHENTICATED
    assert receiver.producer.sent == []
    metrics = receiver.metrics_text()
    assert f'otelcol_receiver_refused_requests_total{{http_route="/v1/logs",reason="{reason}"}} 1.0' in metrics


async def test_a_licence_for_another_org_or_from_an_unknown_issuer_is_401(receiver: Harness) -> None:
    _, token = receiver.licence("acme")
    other_org = await receiver.post(log_body(1), auth={"Authorization": basic("globex", token)})
    assert other_org.status_code == 401
    _, foreign = issue_license(Ed25519Signer.generate(), org_id="nobody")
    unknown = await receiver.post(log_body(1), auth={"Authorization": basic("nobody", foreign)})
    assert unknown.status_code == 401
    assert receiver.producer.sent == []


async def test_expired_revoked_and_unentitled_licences_are_403(receiver: Harness) -> None:
    expired = receiver.auth(valid_for=timedelta(hours=1))
    assert (await receiver.post(log_body(1), auth=expired)).status_code == 403
    lic, token = receiver.licence()
    receiver.verifier.replace_revocations([lic.license_id])
    revoked = await receiver.post(log_body(1), auth={"Authorization": basic("acme", token)})
    assert revoked.status_code == 403
    assert "revoked" in status_of(revoked).message
    reporting_only = await receiver.post(log_body(1), auth=receiver.auth(entitlements=[REPORTING]))
    assert reporting_only.status_code == 403
    assert status_of(reporting_only).code == code_pb2.PERMISSION_DENIED
    assert "www-authenticate" not in reporting_only.headers
    assert receiver.producer.sent == []


async def test_a_header_accepted_before_is_checked_again_on_every_request(receiver: Harness) -> None:
    """The endpoint remembers a Basic header's parse, never the verdict: revocation and expiry still apply."""
    lic, token = receiver.licence(valid_for=timedelta(days=1, hours=2))  # issued a day before the clock
    header = {"Authorization": basic("acme", token)}
    assert (await receiver.post(log_body(1), auth=header)).status_code == 200
    receiver.clock.advance(3 * 3600)
    expired = await receiver.post(log_body(1), auth=header)
    assert expired.status_code == 403 and "expired" in status_of(expired).message
    lic, token = receiver.licence()
    header = {"Authorization": basic("acme", token)}
    assert (await receiver.post(log_body(1), auth=header)).status_code == 200
    receiver.verifier.replace_revocations([lic.license_id])
    revoked = await receiver.post(log_body(1), auth=header)
    assert revoked.status_code == 403 and "revoked" in status_of(revoked).message
    assert len(receiver.producer.sent) == 2


async def test_errors_answer_in_json_for_json_requests(receiver: Harness) -> None:
    response = await receiver.post(b"{oops", content_type="application/json")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert json_document(response)["code"] == code_pb2.INVALID_ARGUMENT


async def test_tenant_rate_limit_is_429_with_retry_after(make_harness: HarnessFactory) -> None:
    receiver: Harness = await make_harness(tenant_records_per_second=10, tenant_burst_records=20)
    assert (await receiver.post(log_body(15))).status_code == 200
    limited = await receiver.post(log_body(15))
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    status = status_of(limited)
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    assert retry_delay_of(status) == 1
    other_tenant = await receiver.post(log_body(15), auth=receiver.auth("globex", "tenant-globex"))
    assert other_tenant.status_code == 200
    receiver.clock.advance(1.0)
    assert (await receiver.post(log_body(15))).status_code == 200
    metrics = receiver.metrics_text()
    assert ('otelcol_receiver_refused_log_records_total{reason="rate_limited",receiver="otlp",'
            'tenant="tenant-acme",transport="http"} 15.0') in metrics


@pytest.mark.parametrize("mode", ["fail", "raise", "hang"])
async def test_broker_failure_is_503_and_then_fails_fast_until_a_probe_succeeds(
    make_harness: HarnessFactory, mode: str
) -> None:
    receiver: Harness = await make_harness(retry_after_seconds=7, broker_probe_interval_seconds=2)
    receiver.producer.mode = mode
    first = await receiver.post(log_body(2))
    assert first.status_code == 503
    assert first.headers["retry-after"] == "7"
    assert retry_delay_of(status_of(first)) == 7
    assert (await receiver.client.get("/readyz")).status_code == 503
    # While the broker is known to be down, requests are answered at once without touching it.
    receiver.producer.mode = "ack"
    fast = await receiver.post(log_body(2))
    assert fast.status_code == 503
    assert receiver.producer.sent == []
    receiver.clock.advance(2.0)
    probe = await receiver.post(log_body(2))
    assert probe.status_code == 200
    assert (await receiver.client.get("/readyz")).status_code == 200
    assert (await receiver.post(log_body(2))).status_code == 200
    # A hung send keeps its bytes counted until the producer gives up on them.
    budget = receiver.app.state.ingest.budget
    if mode == "hang":
        assert budget.used > 0
        for future in receiver.producer.pending:
            future.set_exception(TimeoutError())
        await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert budget.used == 0


async def test_broker_failure_refunds_the_rate_limit(make_harness: HarnessFactory) -> None:
    receiver: Harness = await make_harness(tenant_records_per_second=1, tenant_burst_records=10,
                                           broker_probe_interval_seconds=0.5)
    receiver.producer.mode = "fail"
    assert (await receiver.post(log_body(10))).status_code == 503
    receiver.producer.mode = "ack"
    receiver.clock.advance(0.5)
    assert (await receiver.post(log_body(10))).status_code == 200


async def test_in_flight_limit_is_503(make_harness: HarnessFactory) -> None:
    receiver: Harness = await make_harness(max_body_bytes=64 * 1024, max_in_flight_bytes=64 * 1024,
                                           overload_retry_after_seconds=2)
    receiver.producer.mode = "hang"
    body = log_body(40, text="z" * 1000)
    assert len(body) > 32 * 1024
    first = asyncio.create_task(receiver.post(body))
    for _ in range(100):
        if receiver.producer.pending:
            break
        await asyncio.sleep(0.005)
    second = await receiver.post(body)
    assert second.status_code == 503
    assert second.headers["retry-after"] == "2"
    assert "in-flight" in status_of(second).message
    receiver.producer.pending[0].set_result(None)
    assert (await first).status_code == 200


async def test_ingest_waits_for_the_revocation_list(make_harness: HarnessFactory) -> None:
    loaded = asyncio.Event()

    async def revocations() -> list[str]:
        await loaded.wait()
        return []

    receiver: Harness = await make_harness(revocations=revocations)
    response = await receiver.post(log_body(1))
    assert response.status_code == 503
    assert "revocation" in status_of(response).message
    assert (await receiver.client.get("/readyz")).json()["revocations"] is False
    loaded.set()
    for _ in range(100):
        if (await receiver.client.get("/readyz")).status_code == 200:
            break
        await asyncio.sleep(0.01)
    assert (await receiver.post(log_body(1))).status_code == 200


async def test_metrics_route_takes_metric_batches_to_their_own_topic(make_harness: HarnessFactory) -> None:
    receiver: Harness = await make_harness(kafka_max_message_bytes=32 * 1024)
    request = metric_request(4, 3, big_metric_at=1, big_size=100_000)
    response = await receiver.post(request.SerializeToString(), path="/v1/metrics")
    assert response.status_code == 200
    assert metrics_answer(response).partial_success.rejected_data_points == 3
    assert {s.topic for s in receiver.producer.sent} == {receiver.settings.topic_raw_metrics}
    assert sum(int(s.headers["record_count"]) for s in receiver.producer.sent) == 9
    small = metric_request(2, 2).SerializeToString()
    assert (await receiver.post(small, path="/v1/metrics")).status_code == 200
    assert receiver.producer.sent[-1].value == small
    assert (await receiver.post(small, path="/v1/metrics", auth={})).status_code == 401


async def test_health_metrics_and_unknown_routes(receiver: Harness) -> None:
    assert (await receiver.client.get("/healthz")).status_code == 200
    ready = await receiver.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"broker": True, "licence_keys": True, "revocations": True, "accepting": True}
    await receiver.post(log_body(3))
    text = receiver.metrics_text()
    for name in ("otelcol_receiver_accepted_log_records_total", "otelcol_receiver_refused_log_records",
                 "http_server_request_duration_seconds_bucket", "otelcol_receiver_in_flight_bytes",
                 "otelcol_receiver_enqueue_duration_seconds"):
        assert name in text
    assert ('otelcol_receiver_accepted_log_records_total{receiver="otlp",tenant="tenant-acme",transport="http"} 3.0'
            in text)
    # Metrics name tenants: never on the port clients reach.
    assert (await receiver.client.get("/metrics")).status_code == 404
    missing = await receiver.client.post("/v1/traces", content=b"", headers={"Content-Type": "application/x-protobuf"})
    assert missing.status_code == 404
    assert status_of(missing).code == code_pb2.NOT_FOUND
    wrong_method = await receiver.client.get("/v1/logs")
    assert wrong_method.status_code == 405
    status_of(wrong_method)


async def test_draining_turns_readiness_off(receiver: Harness) -> None:
    receiver.app.state.receiver.begin_drain()
    ready = await receiver.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["accepting"] is False


async def test_partial_success_answer_round_trips_in_json(make_harness: HarnessFactory) -> None:
    receiver: Harness = await make_harness(max_records_per_request=1)
    response = await receiver.post(log_json(3), content_type="application/json")
    document = json_document(response)
    assert document["partialSuccess"]["rejectedLogRecords"] in ("2", 2)
    assert document["partialSuccess"]["errorMessage"]
    assert logs_answer(response).partial_success.rejected_log_records == 2


def test_request_builders_are_sane() -> None:
    assert otlp.count_log_records(log_request(4)) == 4


async def test_concurrent_batch_limit_refuses_the_excess_at_once(make_harness: HarnessFactory) -> None:
    receiver: Harness = await make_harness(max_concurrent_batches=2, overload_retry_after_seconds=1)
    receiver.producer.mode = "hang"
    waiting = [asyncio.create_task(receiver.post(log_body(2))) for _ in range(2)]
    for _ in range(100):
        if len(receiver.producer.pending) == 2:
            break
        await asyncio.sleep(0.005)
    refused = await receiver.post(log_body(2))
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "concurrent" in status_of(refused).message
    for future in receiver.producer.pending:
        future.set_result(None)
    assert [(await task).status_code for task in waiting] == [200, 200]
    receiver.producer.mode = "ack"
    assert (await receiver.post(log_body(2))).status_code == 200


async def test_export_routes_keep_the_routers_answers(receiver: Harness) -> None:
    """Export POSTs skip the router (ExportRoutes); every other request still gets the router's answer."""
    slash = await receiver.client.post("/v1/logs/", content=log_body(1),
                                       headers={"Content-Type": "application/x-protobuf", **receiver.auth()})
    assert slash.status_code == 307  # Starlette's redirect, not an export
    assert receiver.producer.sent == []
    for method in ("PUT", "DELETE", "PATCH"):
        wrong = await receiver.client.request(method, "/v1/metrics", content=b"")
        assert wrong.status_code == 405
        status_of(wrong)
    unauthenticated = await receiver.post(log_body(1), auth={})
    assert unauthenticated.status_code == 401
    assert "WWW-Authenticate" in unauthenticated.headers


async def test_an_unexpected_error_on_the_export_path_is_still_a_500_status(
        make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.receiver import ingest  # noqa: PLC0415

    async def broken(self: ingest.IngestRequest) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ingest.IngestRequest, "_decode", broken)
    receiver = await make_harness()
    # As a server would: the error answered, not raised into the client.
    transport = httpx.ASGITransport(app=receiver.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        response = await client.post("/v1/logs", content=log_body(2),
                                     headers={"Content-Type": "application/x-protobuf", **receiver.auth()})
    assert response.status_code == 500
    assert status_of(response).code == code_pb2.INTERNAL
    assert receiver.producer.sent == []
