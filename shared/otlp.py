"""OTLP/HTTP payloads: decoding both encodings, splitting for Kafka, and the response bodies.

JSON follows the OTLP rules, which differ from plain proto3 JSON: trace and span ids are hex, not base64;
int64 values may be numbers or strings; enums are integers; unknown fields are ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest as ExportLogsServiceRequest,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest as ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

RequestT = TypeVar("RequestT", ExportLogsServiceRequest, ExportMetricsServiceRequest)

_HEX_ID_FIELDS = {"traceId", "spanId", "trace_id", "span_id", "parentSpanId", "parent_span_id"}


class PayloadError(ValueError):
    """The body cannot be decoded as the OTLP message it claims to be; never retryable."""


class Encoding(Enum):
    PROTOBUF = PROTOBUF
    JSON = JSON


def media_type(content_type: str | None) -> Encoding | None:
    """``application/json; charset=utf-8`` is JSON; anything unknown is None (415)."""
    if not content_type:
        return None
    base = content_type.split(";", 1)[0].strip().lower()
    for encoding in Encoding:
        if base == encoding.value:
            return encoding
    return None


def _hex_ids_to_base64(node: Any) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _HEX_ID_FIELDS and isinstance(value, str):
                try:
                    value = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError as exc:
                    raise PayloadError(f"{key} is not hex") from exc
            out[key] = _hex_ids_to_base64(value)
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    return node


def decode_request(body: bytes, encoding: Encoding, message_type: type[RequestT]) -> RequestT:
    message = message_type()
    if encoding is Encoding.PROTOBUF:
        try:
            message.ParseFromString(body)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise PayloadError(f"body is not a valid protobuf {message_type.__name__}") from exc
        return message
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise PayloadError("JSON body must be an object")
    try:
        json_format.ParseDict(_hex_ids_to_base64(document), message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError, binascii.Error) as exc:
        raise PayloadError(f"JSON body does not match {message_type.__name__}: {exc}") from exc
    return message


def count_log_records(request: ExportLogsServiceRequest) -> int:
    return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)


def count_data_points(request: ExportMetricsServiceRequest) -> int:
    total = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    total += len(getattr(metric, kind).data_points)
    return total


@dataclass(frozen=True)
class LogChunk:
    payload: bytes
    record_count: int


def split_logs(
    request: ExportLogsServiceRequest, max_bytes: int
) -> tuple[list[LogChunk], list[ExportLogsServiceRequest]]:
    """Split into serialised requests of at most ``max_bytes``, keeping resource and scope with each record.

    Returns the chunks, and the one-record requests too large to fit a message on their own; the caller
    refuses those through ``partial_success`` rather than lose the rest of the batch.
    """
    whole = request.SerializeToString()
    if len(whole) <= max_bytes:
        return [LogChunk(whole, count_log_records(request))], []
    chunks: list[LogChunk] = []
    oversized: list[ExportLogsServiceRequest] = []
    current = ExportLogsServiceRequest()
    current_size = 0
    current_count = 0
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            for record in sl.log_records:
                single = ExportLogsServiceRequest()
                target_rl = single.resource_logs.add()
                target_rl.resource.CopyFrom(rl.resource)
                target_rl.schema_url = rl.schema_url
                target_sl = target_rl.scope_logs.add()
                target_sl.scope.CopyFrom(sl.scope)
                target_sl.schema_url = sl.schema_url
                target_sl.log_records.append(record)
                size = single.ByteSize()
                if size > max_bytes:
                    oversized.append(single)
                    continue
                if current_count and current_size + size > max_bytes:
                    chunks.append(LogChunk(current.SerializeToString(), current_count))
                    current, current_size, current_count = ExportLogsServiceRequest(), 0, 0
                _merge_single(current, single)
                current_size = current.ByteSize()
                current_count += 1
    if current_count:
        chunks.append(LogChunk(current.SerializeToString(), current_count))
    return chunks, oversized


def _merge_single(into: ExportLogsServiceRequest, single: ExportLogsServiceRequest) -> None:
    """Append a one-record request, reusing the last resource/scope group when it is the same one."""
    src_rl = single.resource_logs[0]
    src_sl = src_rl.scope_logs[0]
    if into.resource_logs:
        last_rl = into.resource_logs[-1]
        if last_rl.resource == src_rl.resource and last_rl.schema_url == src_rl.schema_url:
            last_sl = last_rl.scope_logs[-1]
            if last_sl.scope == src_sl.scope and last_sl.schema_url == src_sl.schema_url:
                last_sl.log_records.append(src_sl.log_records[0])
            else:
                last_rl.scope_logs.append(src_sl)
            return
    into.resource_logs.append(src_rl)


def iter_metric_chunks(request: ExportMetricsServiceRequest, max_bytes: int) -> Iterator[bytes]:
    """Metrics split by resource, then by metric; a single metric larger than a message is rare enough
    that it is refused whole by the caller (the iterator yields it and the producer raises)."""
    whole = request.SerializeToString()
    if len(whole) <= max_bytes:
        yield whole
        return
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                single = ExportMetricsServiceRequest()
                target_rm = single.resource_metrics.add()
                target_rm.resource.CopyFrom(rm.resource)
                target_sm = target_rm.scope_metrics.add()
                target_sm.scope.CopyFrom(sm.scope)
                target_sm.metrics.append(metric)
                yield single.SerializeToString()


def encode_message(message: Message, encoding: Encoding) -> bytes:
    if encoding is Encoding.JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return message.SerializeToString()


def logs_response(rejected: int = 0, error_message: str = "") -> ExportLogsServiceResponse:
    response = ExportLogsServiceResponse()
    if rejected or error_message:
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = error_message
    return response


def metrics_response(rejected: int = 0, error_message: str = "") -> ExportMetricsServiceResponse:
    response = ExportMetricsServiceResponse()
    if rejected or error_message:
        response.partial_success.rejected_data_points = rejected
        response.partial_success.error_message = error_message
    return response


def status_body(code: int, message: str) -> status_pb2.Status:
    """``code`` is a google.rpc.Code value, as OTLP/HTTP asks for in error bodies."""
    return status_pb2.Status(code=code, message=message)
