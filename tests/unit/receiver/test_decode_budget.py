"""Decoding within a budget: empty entries count as records, the tenant pays before decoding, big bodies
are decoded off the event loop, and JSON past the record cap never reaches the (costly) conversion."""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from services.receiver import decoding
from shared import otlp
from tests.unit.receiver.conftest import HarnessFactory
from tests.unit.receiver.payloads import log_body, log_request, logs_answer

JSON = "application/json"


def empty_resources(count: int) -> bytes:
    return json.dumps({"resourceLogs": [{}] * count}).encode()


async def test_the_issue_body_is_refused_and_charged_to_its_tenant(make_harness: HarnessFactory) -> None:
    """1 MB of `{"resourceLogs":[{},{},…]}` (about 1 KB gzipped) is no longer a free 200."""
    harness = await make_harness(max_records_per_request=1000, tenant_burst_records=5000,
                                 tenant_records_per_second=1)
    body = gzip.compress(empty_resources(250_000))
    assert len(body) < 4096
    response = await harness.post(body, content_type=JSON, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert "empty entries count against the limit of 1000 records" in response.json()["message"]
    assert harness.producer.sent == []
    # Charged: the decompressed megabyte (1,000 record-equivalents at 1 KiB each) and the entries beyond it.
    bucket = harness.app.state.ingest.limiters["logs"]._buckets["tenant-acme"]
    assert bucket.tokens <= 5000 - 1001


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
async def test_empty_scope_entries_count_against_the_per_request_cap(
    make_harness: HarnessFactory, encoding: str
) -> None:
    harness = await make_harness(max_records_per_request=10)
    request = log_request(8)
    for _ in range(4):
        request.resource_logs[0].scope_logs.add()  # four empty scopes beside the one holding 8 records
    body = (json_format.MessageToJson(request).encode() if encoding == "json" else request.SerializeToString())
    response = await harness.post(body, content_type=JSON if encoding == "json" else "application/x-protobuf")
    assert response.status_code == 200
    answer = logs_answer(response)
    # 10 allowed - 4 empty entries = 6 records kept, 2 refused through partial_success.
    assert answer.partial_success.rejected_log_records == 2
    assert "4 empty resource or scope entries count against it" in answer.partial_success.error_message
    assert sum(message_records(sent.value) for sent in harness.producer.sent) == 6


def message_records(value: bytes) -> int:
    return otlp.count_log_records(otlp.decode_request(value, otlp.Encoding.PROTOBUF, otlp.ExportLogsServiceRequest))


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
async def test_more_empty_entries_than_the_cap_is_a_400(make_harness: HarnessFactory, encoding: str) -> None:
    harness = await make_harness(max_records_per_request=50)
    if encoding == "json":
        body, kind = json.dumps({"resourceLogs": [{"scopeLogs": [{}] * 51}]}).encode(), JSON
    else:
        body, kind = b"\x0a\x00" * 51, "application/x-protobuf"
    response = await harness.post(body, content_type=kind)
    assert response.status_code == 400
    assert harness.producer.sent == []


async def test_the_tenant_limiter_runs_before_decoding(
    make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = await make_harness(tenant_burst_records=10, tenant_records_per_second=1, tenant_bytes_per_record=100)
    assert (await harness.post(log_body(2))).status_code == 200
    decoded: list[int] = []
    real = decoding.decode_within_budget

    def counting(body: bytes, *args: Any) -> Any:
        decoded.append(len(body))
        return real(body, *args)

    monkeypatch.setattr("services.receiver.ingest.decode_within_budget", counting)
    # A 2 KB body is charged 20 record-equivalents: refused before a byte of it is decoded.
    big = log_body(1, text="x" * 2000)
    response = await harness.post(big)
    assert response.status_code == 429
    assert decoded == []
    # Another tenant is not affected.
    assert (await harness.post(log_body(2), auth=harness.auth("globex", "tenant-globex"))).status_code == 200
    assert decoded


async def test_the_charge_is_settled_to_the_records_counted(make_harness: HarnessFactory) -> None:
    harness = await make_harness(tenant_burst_records=1000, tenant_records_per_second=0.001,
                                 tenant_bytes_per_record=10)
    body = log_body(3)
    assert len(body) > 30  # charged more than 3 before decoding...
    assert (await harness.post(body)).status_code == 200
    bucket = harness.app.state.ingest.limiters["logs"]._buckets["tenant-acme"]
    assert 996.9 < bucket.tokens <= 997.0  # ...and settled to the 3 records it held


async def test_large_bodies_are_decoded_off_the_event_loop(
    make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = await make_harness(decode_off_loop_bytes=1024)
    threads: list[str] = []
    real = decoding.decode_within_budget

    def recording(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(decoding, "decode_within_budget", recording)
    monkeypatch.setattr("services.receiver.ingest.decode_within_budget", recording)
    assert (await harness.post(log_body(1))).status_code == 200  # small: on the loop
    assert (await harness.post(log_body(50, text="y" * 100))).status_code == 200  # large: on the worker
    assert threads[0] == threading.main_thread().name
    assert threads[1].startswith("otlp-decode")


def test_json_past_the_cap_is_cut_before_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    converted: list[int] = []
    real = otlp.decode_document

    def counting(document: dict[str, Any], message_type: Any) -> Any:
        converted.append(sum(len(s.get("logRecords", [])) for r in document["resourceLogs"]
                             for s in r.get("scopeLogs", [])))
        return real(document, message_type)

    monkeypatch.setattr(otlp, "decode_document", counting)
    request = log_request(30)
    request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "second resource"
    body = json_format.MessageToJson(request).encode()
    result = decoding.decode_within_budget(body, otlp.Encoding.JSON, otlp.ExportLogsServiceRequest,
                                           decoding.LOG_LEVELS, 10)
    assert converted == [10]
    assert result.items_before_cut == 31 and otlp.count_log_records(result.request) == 10
    assert [r.body.string_value for r in result.request.resource_logs[0].scope_logs[0].log_records][-1].endswith(" 9")


async def test_decoded_memory_counts_against_the_in_flight_budget(
    make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 MiB of `{}` entries would hold tens of MB once parsed: refused (413) before json.loads runs."""
    harness = await make_harness()
    decoded: list[int] = []
    monkeypatch.setattr("services.receiver.ingest.decode_within_budget",
                        lambda body, *args: decoded.append(len(body)))
    monkeypatch.setattr("services.receiver.decoding.decode_within_budget",
                        lambda body, *args: decoded.append(len(body)))
    body = json.dumps({"resourceLogs": [{}] * 700_000}, separators=(",", ":")).encode()
    assert len(body) <= 2.1 * 1024 * 1024
    response = await harness.post(gzip.compress(body), content_type=JSON, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "in-flight limit" in response.json()["message"]
    assert decoded == []
    assert harness.app.state.ingest.budget.used == 0  # nothing left reserved


def test_the_estimate_charges_object_floods_not_honest_json() -> None:
    honest = json_format.MessageToJson(log_request(200, attributes={"user.id": "u-1", "tool": "Bash"})).encode()
    assert decoding.decoded_memory_estimate(honest, otlp.Encoding.JSON) == 0
    flood = empty_resources(100_000)
    assert decoding.decoded_memory_estimate(flood, otlp.Encoding.JSON) > 5 * len(flood)
    assert decoding.decoded_memory_estimate(b"\x0a\x00" * 1000, otlp.Encoding.PROTOBUF) == 0


def test_the_protobuf_scan_agrees_with_upb_on_real_captures(fixtures_dir: Path) -> None:
    captures = [c for c in sorted(fixtures_dir.glob("*-*.pb*")) if c.name.endswith((".pb", ".pb.gz"))]
    assert len(captures) >= 3
    for capture in captures:
        body = capture.read_bytes()
        if capture.suffix == ".gz":
            body = gzip.decompress(body)
        assert decoding.protobuf_shape(body, 20_000) == 0, capture.name
    big = log_request(3000, text="z" * 200)
    big.resource_logs[0].scope_logs.add()  # one empty scope
    assert decoding.protobuf_shape(big.SerializeToString(), 20_000) == 1


@pytest.mark.parametrize(("body", "error"), [
    (b"\x0a\x00" * 500_000, decoding.TooManyEmptyEntries),  # 1 MB of empty resources
    (b"\x0a\x02\x12\x00" * 250_000, decoding.TooManyEmptyEntries),  # resources holding one empty scope each
    # 16 MiB of empty records in one scope: millions of messages, refused before any is built.
    (b"\x0a\x85\x80\x80\x08" + b"\x12\x80\x80\x80\x08" + b"\x12\x00" * (8 * 1024 * 1024), decoding.TooManyEntries),
])
def test_floods_of_protobuf_entries_are_refused_before_parsing(
    body: bytes, error: type[Exception], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(otlp, "decode_request", lambda *args: pytest.fail("upb should not have run"))
    with pytest.raises(error):
        decoding.decode_within_budget(body, otlp.Encoding.PROTOBUF, otlp.ExportLogsServiceRequest,
                                      decoding.LOG_LEVELS, 20_000)


def test_a_truncated_protobuf_body_is_a_payload_error() -> None:
    body = log_body(2000)
    with pytest.raises(otlp.PayloadError):
        decoding.protobuf_shape(body[:-7], 20_000)


async def test_a_tenant_in_debt_is_refused_before_its_body_is_read(
    make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = await make_harness(max_records_per_request=1000, tenant_burst_records=5000,
                                 tenant_records_per_second=10)
    from services.receiver import ingest, limits  # noqa: PLC0415

    reads: list[int] = []
    real_read = limits.read_body  # what ingest imported; patched below where ingest looks it up

    async def counting_read(*args: Any, **kwargs: Any) -> bytes:
        reads.append(1)
        return await real_read(*args, **kwargs)

    monkeypatch.setattr(ingest, "read_body", counting_read)
    hostile = gzip.compress(empty_resources(250_000))
    statuses = []
    for _ in range(12):
        response = await harness.post(hostile, content_type=JSON, headers={"Content-Encoding": "gzip"})
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {400}, statuses
    # In debt now: the next requests are refused without reading (or inflating) a byte of their bodies.
    before = len(reads)
    for _ in range(3):
        refused = await harness.post(hostile, content_type=JSON, headers={"Content-Encoding": "gzip"})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert len(reads) == before
    assert harness.app.state.ingest.budget.used == 0
    # Other tenants are untouched, and the tenant gets through again once it has paid.
    assert (await harness.post(log_body(2), auth=harness.auth("globex", "tenant-globex"))).status_code == 200
    harness.clock.advance(1000)
    assert (await harness.post(log_body(2))).status_code == 200
