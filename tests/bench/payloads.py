"""Claude Code-shaped OTLP log batches for load tests, built from the real captures.

Each batch is one resource (``service.name=claude-code``) and one scope, like the CLI's own exports, with
records drawn in session order from the captured events. The free-text attributes (prompt, response,
tool input and parameters, error) are lengthened so the batch averages the requested record size, which
is what a busy organisation's prompts and tool calls look like; ids and sequence numbers differ per batch.
"""

from __future__ import annotations

import gzip
import uuid
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from shared import otlp

CAPTURES = ("logs-tool-session.pb", "logs-api-error.pb", "logs-tool-session-nocontent.pb.gz")
# Events that carry free text, and the attribute holding it.
_TEXT_ATTRIBUTE = {
    "user_prompt": "prompt",
    "assistant_response": "response",
    "tool_result": "tool_input",
    "tool_decision": "tool_parameters",
    "api_error": "error",
}
_FILLER = (
    "Refactor the billing module so invoices are generated from the ledger rather than the orders table; "
    "keep the public API stable, add tests for proration and credit notes, and explain the migration. "
)


@dataclass(frozen=True)
class Batch:
    body: bytes
    records: int


def session_id(number: int) -> str:
    """The session.id of the ``number``-th generated batch."""
    return str(uuid.UUID(int=number + 1))


def _event_name(record: LogRecord) -> str:
    for attribute in record.attributes:
        if attribute.key == "event.name":
            return attribute.value.string_value
    return ""


def captured_shapes(fixtures_dir: Path) -> tuple[otlp.ExportLogsServiceRequest, list[LogRecord]]:
    """The first capture (for its resource and scope) and every captured record, in session order."""
    first: otlp.ExportLogsServiceRequest | None = None
    records: list[LogRecord] = []
    for name in CAPTURES:
        data = (fixtures_dir / name).read_bytes()
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        request = otlp.decode_request(data, otlp.Encoding.PROTOBUF, otlp.ExportLogsServiceRequest)
        first = first or request
        records.extend(r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records)
    assert first is not None
    return first, records


def set_string_attribute(record: LogRecord, key: str, value: str) -> None:
    """Replace the record's attribute ``key`` with a string, or add it."""
    for attribute in record.attributes:
        if attribute.key == key:
            attribute.value.string_value = value
            return
    added = record.attributes.add()
    added.key = key
    added.value.string_value = value


def _set_text(record: LogRecord, key: str, length: int) -> None:
    set_string_attribute(record, key, (_FILLER * (length // len(_FILLER) + 1))[:length])


def build_batches(
    fixtures_dir: Path, *, count: int, records_per_batch: int = 50, record_bytes: int = 1024, first_session: int = 0
) -> list[Batch]:
    """``count`` distinct protobuf bodies of ``records_per_batch`` records averaging ``record_bytes``.

    Batch ``i`` is session ``first_session + i``: runs against one database give distinct ranges, or their
    events would be the same events (the event id is derived from the content)."""
    template, shapes = captured_shapes(fixtures_dir)
    source_rl = template.resource_logs[0]
    source_sl = source_rl.scope_logs[0]
    batches = []
    cursor = 0
    for index in range(count):
        request = otlp.ExportLogsServiceRequest()
        rl = request.resource_logs.add()
        rl.resource.CopyFrom(source_rl.resource)
        sl = rl.scope_logs.add()
        sl.scope.CopyFrom(source_sl.scope)
        session = session_id(first_session + index)
        for position in range(records_per_batch):
            record = sl.log_records.add()
            record.CopyFrom(shapes[cursor % len(shapes)])
            cursor += 1
            for attribute in record.attributes:
                if attribute.key == "session.id":
                    attribute.value.string_value = session
                elif attribute.key == "event.sequence":
                    attribute.value.int_value = position
        # Lengthen the free text so the batch averages ``record_bytes`` per record.
        texts = [r for r in sl.log_records if _event_name(r) in _TEXT_ATTRIBUTE]
        deficit = records_per_batch * record_bytes - sum(r.ByteSize() for r in sl.log_records)
        for position, record in enumerate(texts):
            share = deficit // len(texts) + (1 if position < deficit % len(texts) else 0)
            key = _TEXT_ATTRIBUTE[_event_name(record)]
            current = next((a.value.string_value for a in record.attributes if a.key == key), "")
            _set_text(record, key, max(0, len(current) + share))
        batches.append(Batch(request.SerializeToString(), records_per_batch))
    return batches
