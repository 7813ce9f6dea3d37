"""Small OTLP bodies and answer decoders for receiver tests."""

from __future__ import annotations

import json
from typing import Any

import httpx
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from shared import otlp


def log_request(count: int = 3, *, text: str = "hello", attributes: dict[str, str] | None = None,
                big_record_at: int | None = None, big_size: int = 0) -> otlp.ExportLogsServiceRequest:
    request = otlp.ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    service = rl.resource.attributes.add()
    service.key, service.value.string_value = "service.name", "claude-code"
    sl = rl.scope_logs.add()
    sl.scope.name = "com.anthropic.claude_code.events"
    for index in range(count):
        record = sl.log_records.add()
        record.time_unix_nano = 1_795_878_787_000_000_000 + index
        record.body.string_value = f"claude_code.user_prompt {text} {index}"
        for key, value in {"event.sequence": str(index), **(attributes or {})}.items():
            attribute = record.attributes.add()
            attribute.key, attribute.value.string_value = key, value
        if index == big_record_at:
            attribute = record.attributes.add()
            attribute.key, attribute.value.string_value = "prompt", "p" * big_size
    return request


def log_body(count: int = 3, **kwargs: Any) -> bytes:
    return log_request(count, **kwargs).SerializeToString()


def log_json(count: int = 3, **kwargs: Any) -> bytes:
    return json_format.MessageToJson(log_request(count, **kwargs)).encode()


def metric_request(metrics: int = 2, points: int = 3, *, big_metric_at: int | None = None,
                   big_size: int = 0) -> otlp.ExportMetricsServiceRequest:
    request = otlp.ExportMetricsServiceRequest()
    sm = request.resource_metrics.add().scope_metrics.add()
    for index in range(metrics):
        metric = sm.metrics.add()
        metric.name = f"claude_code.token.usage.{index}"
        for point in range(points):
            data_point = metric.sum.data_points.add()
            data_point.as_int = point
            if index == big_metric_at and point == 0:
                attribute = data_point.attributes.add()
                attribute.key, attribute.value.string_value = "padding", "x" * big_size
    return request


def records_in(payload: bytes, content_type: str = otlp.PROTOBUF) -> list[str]:
    encoding = otlp.media_type(content_type)
    assert encoding is not None
    request = otlp.decode_request(payload, encoding, otlp.ExportLogsServiceRequest)
    return [r.body.string_value for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]


def status_of(response: httpx.Response) -> status_pb2.Status:
    """The google.rpc.Status an error answer carries, in the answer's own encoding."""
    status = status_pb2.Status()
    if response.headers["content-type"].startswith("application/json"):
        json_format.Parse(response.content, status)
    else:
        status.ParseFromString(response.content)
    assert status.message, "an error answer must say why"
    return status


def retry_delay_of(status: status_pb2.Status) -> int | None:
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return int(info.retry_delay.seconds)
    return None


def logs_answer(response: httpx.Response) -> ExportLogsServiceResponse:
    answer = ExportLogsServiceResponse()
    if response.headers["content-type"].startswith("application/json"):
        json_format.Parse(response.content, answer)
    else:
        answer.ParseFromString(response.content)
    return answer


def metrics_answer(response: httpx.Response) -> ExportMetricsServiceResponse:
    answer = ExportMetricsServiceResponse()
    answer.ParseFromString(response.content)
    return answer


def json_document(response: httpx.Response) -> Any:
    return json.loads(response.content)
