"""OTLP/HTTP payloads: decoding both encodings, splitting for Kafka, and the response bodies.

JSON follows the OTLP rules, which differ from plain proto3 JSON: trace and span ids are hex, not base64;
int64 values may be numbers or strings; enums are integers; unknown fields are ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator, Sequence
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
                    out[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError as exc:
                    raise PayloadError(f"{key} is not hex") from exc
                continue
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
        raise PayloadError(f"body is not valid JSON: {parse_error_summary(exc)}") from exc
    if not isinstance(document, dict):
        raise PayloadError("JSON body must be an object")
    return decode_document(document, message_type)


def decode_document(document: dict[str, Any], message_type: type[RequestT]) -> RequestT:
    """The message an OTLP/JSON document (already parsed by ``json.loads``) describes."""
    message = message_type()
    try:
        json_format.ParseDict(_hex_ids_to_base64(document), message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError, binascii.Error) as exc:
        raise PayloadError(f"JSON body does not match {message_type.__name__}: {parse_error_summary(exc)}") from exc
    return message


_SCHEMA_FIELD = re.compile(r"Failed to parse ([A-Za-z_][A-Za-z0-9_]{0,63}) field")


def parse_error_summary(exc: BaseException) -> str:
    """A parse error's kind and position, never its text: parsers quote the offending value
    (``Couldn't parse integer: "my ssn is ..."``), and these messages reach logs and dead-letter headers.

    Positions are offsets and line/column numbers; a protobuf field name comes from the schema, not the body.
    """
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})"
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid {exc.encoding} at byte {exc.start}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    field = _SCHEMA_FIELD.search(str(exc))
    where = f" in field {field.group(1)}" if field else ""
    return f"{type(exc).__name__}{where}"


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
    """A serialised request that fits one Kafka message; ``record_count`` is log records (or data points)."""

    payload: bytes
    record_count: int


def split_logs(
    request: ExportLogsServiceRequest, max_bytes: int
) -> tuple[list[LogChunk], list[ExportLogsServiceRequest]]:
    """Split into serialised requests of at most ``max_bytes``, keeping resource and scope with each record.

    Returns the chunks, and the one-record requests too large to fit a message on their own; the caller
    refuses those through ``partial_success`` rather than lose the rest of the batch. Records keep their
    order. Linear in the size of the request: sizes are tracked arithmetically, never re-measured.
    """
    return _split(request, max_bytes, _LOGS_SHAPE)


def split_metrics(
    request: ExportMetricsServiceRequest, max_bytes: int
) -> tuple[list[LogChunk], list[ExportMetricsServiceRequest]]:
    """``split_logs`` for metrics: the unit is one metric (with all its data points), and each chunk's
    ``record_count`` is its number of data points."""
    return _split(request, max_bytes, _METRICS_SHAPE)


def iter_metric_chunks(request: ExportMetricsServiceRequest, max_bytes: int) -> Iterator[bytes]:
    """Serialised pieces of at most ``max_bytes``; a metric too large on its own is left out."""
    chunks, _ = split_metrics(request, max_bytes)
    for chunk in chunks:
        yield chunk.payload


def keep_first_log_records(request: ExportLogsServiceRequest, limit: int) -> ExportLogsServiceRequest:
    """The first ``limit`` records, each with its resource and scope."""
    kept = ExportLogsServiceRequest()
    remaining = limit
    for rl in request.resource_logs:
        if remaining <= 0:
            break
        target_rl = kept.resource_logs.add()
        _copy_shell(rl, target_rl, "resource")
        for sl in rl.scope_logs:
            if remaining <= 0:
                break
            target_sl = target_rl.scope_logs.add()
            _copy_shell(sl, target_sl, "scope")
            records = sl.log_records[:remaining]
            target_sl.log_records.extend(records)
            remaining -= len(records)
    return kept


@dataclass(frozen=True)
class _Shape:
    """Where the three levels live in a signal's request: group (resource) -> scope -> item."""

    groups: str
    scopes: str
    items: str
    weight: Any  # Callable[[item], int]: how many records/data points one item counts for


def _metric_points(metric: Any) -> int:
    kind = metric.WhichOneof("data")
    return 0 if kind is None else len(getattr(metric, kind).data_points)


_LOGS_SHAPE = _Shape("resource_logs", "scope_logs", "log_records", lambda _: 1)
_METRICS_SHAPE = _Shape("resource_metrics", "scope_metrics", "metrics", _metric_points)


def _varint_size(value: int) -> int:
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def _entry_size(content: int) -> int:
    """Bytes of a length-delimited field with a one-byte tag (every field here has a number below 16)."""
    return 1 + _varint_size(content) + content


def _copy_shell(source: Any, target: Any, header_field: str) -> None:
    """Copy a group's or scope's own fields (resource/scope and schema_url), not its children."""
    if source.HasField(header_field):
        getattr(target, header_field).CopyFrom(getattr(source, header_field))
    target.schema_url = source.schema_url


def _shell_size(message: Any, header_field: str) -> int:
    size = 0
    if message.HasField(header_field):
        size += _entry_size(getattr(message, header_field).ByteSize())
    if message.schema_url:
        size += _entry_size(len(message.schema_url.encode()))
    return size


RequestU = TypeVar("RequestU", ExportLogsServiceRequest, ExportMetricsServiceRequest)


def _split(request: RequestU, max_bytes: int, shape: _Shape) -> tuple[list[LogChunk], list[RequestU]]:
    if request.ByteSize() <= max_bytes:
        total = sum(shape.weight(item) for g in getattr(request, shape.groups)
                    for s in getattr(g, shape.scopes) for item in getattr(s, shape.items))
        return [LogChunk(request.SerializeToString(), total)], []
    request_type = type(request)
    chunks: list[LogChunk] = []
    oversized: list[RequestU] = []
    # The chunk being built, and the exact serialised sizes of its open group and scope.
    current = request_type()
    count = items_in_chunk = 0
    closed_groups = 0  # bytes of the chunk's groups before the open one
    open_group: Any = None  # (source group, target group)
    open_scope: Any = None
    group_shell = scopes_closed = scope_content = 0

    def chunk_size() -> int:
        if open_group is None:
            return closed_groups
        group_content = group_shell + scopes_closed + (_entry_size(scope_content) if open_scope else 0)
        return closed_groups + _entry_size(group_content)

    for group in getattr(request, shape.groups):
        shell_of_group = _shell_size(group, "resource")
        for scope in getattr(group, shape.scopes):
            shell_of_scope = _shell_size(scope, "scope")
            for item in getattr(scope, shape.items):
                item_entry = _entry_size(item.ByteSize())
                alone = _entry_size(shell_of_group + _entry_size(shell_of_scope + item_entry))
                if alone > max_bytes:
                    single = request_type()
                    target_group = getattr(single, shape.groups).add()
                    _copy_shell(group, target_group, "resource")
                    target_scope = getattr(target_group, shape.scopes).add()
                    _copy_shell(scope, target_scope, "scope")
                    getattr(target_scope, shape.items).append(item)
                    oversized.append(single)
                    continue
                same_group = open_group is not None and open_group[0] is group
                same_scope = same_group and open_scope is not None and open_scope[0] is scope
                if same_scope:
                    grown = closed_groups + _entry_size(
                        group_shell + scopes_closed + _entry_size(scope_content + item_entry))
                elif same_group:
                    grown = closed_groups + _entry_size(
                        group_shell + scopes_closed + _entry_size(scope_content)
                        + _entry_size(shell_of_scope + item_entry))
                else:
                    grown = chunk_size() + alone
                if items_in_chunk and grown > max_bytes:
                    chunks.append(LogChunk(current.SerializeToString(), count))
                    current = request_type()
                    count = items_in_chunk = closed_groups = 0
                    open_group = open_scope = None
                    same_group = same_scope = False
                if not same_group:
                    closed_groups = chunk_size()
                    target_group = getattr(current, shape.groups).add()
                    _copy_shell(group, target_group, "resource")
                    open_group, open_scope = (group, target_group), None
                    group_shell, scopes_closed = shell_of_group, 0
                if not same_scope:
                    if open_scope is not None:
                        scopes_closed += _entry_size(scope_content)
                    target_scope = getattr(open_group[1], shape.scopes).add()
                    _copy_shell(scope, target_scope, "scope")
                    open_scope = (scope, target_scope)
                    scope_content = shell_of_scope
                getattr(open_scope[1], shape.items).append(item)
                scope_content += item_entry
                items_in_chunk += 1
                count += shape.weight(item)
    if items_in_chunk:
        chunks.append(LogChunk(current.SerializeToString(), count))
    return chunks, oversized


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


def status_body(code: int, message: str, details: Sequence[Message] = ()) -> status_pb2.Status:
    """``code`` is a google.rpc.Code value, as OTLP/HTTP asks for in error bodies; ``details`` are packed
    as ``google.protobuf.Any`` (BadRequest for bad data, RetryInfo for throttling)."""
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return status
