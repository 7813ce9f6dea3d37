"""The mapping and the transform's output over a fixed, broad input set, pinned by their digests.

Speed work on the OTLP -> canonical mapping, the transform and the canonical encoding must not change a single
byte: every canonical message (key, value and headers with their MAC), every dead-letter reason and the
statistics, for the real Claude Code captures and for seeded synthetic batches that reach every branch of the
mapping (value kinds, event names, timestamps, costs, counters, content fields, attribute collisions, resources
shared or not, several scopes), under each policy, with engines that mask, that raise now and then, and none.
The digests were taken before that work; a change that moves them changes what the redactor produces. If that
is intended, print the new digests with ``python -m tests.unit.redactor.test_transform_pinned`` and update
``EXPECTED_*`` (and say why in the commit).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber

from shared import otlp
from shared.canonical import EVENT_COLUMNS, CanonicalEvent
from shared.canonicalize.mapping import attributes_of, map_record
from shared.canonicalize.transform import BatchRejected, TransformPolicy, TransformStats, transform_batch
from shared.messages import canonical_event
from shared.messages.auth import MessageKey
from shared.messages.raw_batch import RawBatch

EXPECTED_TRANSFORM = "333c0d3bcfc8cd8dabab75513d242bbbfaa5938e3567192ace1a5a52fe22f9b9"
EXPECTED_MAPPING = "d81cf43cfe332d66c59d487b0ec1fa8ad0ef2f54e64726fa577b18d700e45591"

CAPTURES = ("logs-tool-session.pb", "logs-api-error.pb", "logs-tool-session-nocontent.pb.gz",
            "logs-tool-session.json.gz")
KEY = MessageKey.of(b"pinned-canonical-key-0123456789ab", "redactor")
RECEIVED_NS = 1795878790123456789
PLANES = {"claude-code": "claude_code", "claude-code-desktop": "claude_code", "cowork": "cowork"}
POLICIES = (
    TransformPolicy(PLANES, "claude_code", keep_other_events=True, keep_unknown_attributes=True),
    TransformPolicy(PLANES, "other_plane", keep_other_events=False, keep_unknown_attributes=True),
    TransformPolicy(PLANES, "claude_code", keep_other_events=True, keep_unknown_attributes=False),
    TransformPolicy({}, "claude_code", keep_other_events=False, keep_unknown_attributes=False),
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_LONG_NUMBER = re.compile(r"\d{9,}")


@dataclass(frozen=True)
class Masked:
    text: str
    counts: dict[str, int]


class StandIn:
    """Masks e-mail addresses and long numbers, and raises for a text that says "boom" (detection unavailable
    for that field): deterministic and quick, and it reaches the masked, the clean and the withheld paths."""

    def redact_text(self, text: str) -> Masked:
        if "boom" in text:
            raise RuntimeError("stand-in engine refuses")
        masked, emails = _EMAIL.subn("<EMAIL>", text)
        masked, numbers = _LONG_NUMBER.subn("<NUMBER>", masked)
        return Masked(masked, {"EMAIL_ADDRESS": emails, "NUMBER": numbers})

    def redact_json_text(self, text: str) -> Masked:
        if "kaboom" in text:
            raise TimeoutError("over budget")
        result = self.redact_text(text)
        return Masked("J" + result.text, result.counts)


@dataclass
class Lookup:
    engine: StandIn | None

    def engine_for(self, tenant: str) -> StandIn | None:
        return self.engine


# Synthetic batches ------------------------------------------------------------------------------------------

_TEXTS = (
    "", " ", "plain", "jane.doe@acme.com", "call 0123456789012 now", "<REDACTED>", "boom", "a kaboom b",
    "ünïcødé ✓ text", "line\nbreak\ttab \"quoted\" \\slash", "0f8fad5b-d9cb-469f-a165-70867728950e",
    "deadbeefdeadbeefdeadbeef", "Claude-Code", "2.1.332", "claude-opus-4-5@20251101", "true", "no", "1", " 42 ",
    "3.5", "1e3", "nan", "-inf", "acme", "other-org", '{"command": "ls", "email": "bob@example.org"}', "[1, 2]",
    "x" * 700, ("word jane@acme.com " * 40), "\u0000nul", "\ud7ff edge",
)
_EVENT_NAMES = (
    "user_prompt", "tool_result", "tool_decision", "api_request", "api_error", "assistant_response",
    "claude_code.user_prompt", "cowork.tool_result", "claude_code_desktop.api_error", "claude_code.housekeeping",
    "session_start", "Bad Name!", "my ssn is 123-45-6789", " api_request ", "", "a" * 70,
)
_TIMESTAMPS = (
    "2026-11-28T15:14:00.123Z", "2026-11-28T15:14:00", "2026-11-28T15:14:00+05:30", "2026-11-28 15:14:00.5-08:00",
    "not a time", "2026-13-40T00:00:00Z", "", "2026-11-28T15:14:00.123456789Z", "2026-11-28T15:14:00+05:30:15",
    "2026-11-28T15:14:00.25-00:00:30.5", "2026-11-28T15:14:00-00:00", "0999-01-01T00:00:00Z",
)
_MAPPED_KEYS = (
    "event.sequence", "session.id", "prompt.id", "user.email", "user.id", "user.account_uuid", "organization.id",
    "model", "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens", "cost_usd",
    "cost_usd_micros", "duration_ms", "decision", "source", "tool_name", "success", "status_code", "attempt",
    "prompt", "response", "tool_parameters", "tool_input", "error", "prompt_text", "prompt_length",
    "response_length", "tool_input_size_bytes",
)
_OTHER_KEYS = (
    "terminal.type", "resource.host.name", "resource.os.type", "jane@acme.com", "boom", "decision.reason",
    "service.name", "custom.list", "custom.map", "", "sequence",
)
_RESOURCE_KEYS = (
    "service.name", "service.version", "host.name", "os.type", "user.email", "user.id", "user.account_uuid",
    "organization.id", "bob@example.org", "host.arch", "boom.key",
)


def _set(value: AnyValue, rng: random.Random, depth: int = 0) -> None:
    kind = rng.randrange(12 if depth < 2 else 9)
    if kind <= 2:
        value.string_value = rng.choice(_TEXTS)
    elif kind == 3:
        value.int_value = rng.choice((0, 1, -7, 42, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63), 10**15))
    elif kind == 4:
        value.double_value = rng.choice((0.0, 1.5, 3.0, -2.25, 0.00685, 1e20, float("nan"), float("inf"),
                                         float("-inf"), 123456.789))
    elif kind == 5:
        value.bool_value = rng.random() < 0.5
    elif kind == 6:
        value.bytes_value = rng.choice((b"utf-8 text", b"jane@acme.com", b"\xff\xfe\x00bin", b""))
    elif kind == 7:
        pass  # an AnyValue with nothing set
    elif kind == 8:
        value.string_value = f"{rng.choice(_TEXTS)}-{rng.randrange(1000)}"
    elif kind in (9, 10):
        array = value.array_value
        for _ in range(rng.randrange(4)):
            _set(array.values.add(), rng, depth + 1)
    else:
        kvlist = value.kvlist_value
        for _ in range(rng.randrange(4)):
            pair = kvlist.values.add()
            pair.key = rng.choice((*_OTHER_KEYS, "nested@acme.com", "k"))
            _set(pair.value, rng, depth + 1)


def _add(pairs: Any, key: str, rng: random.Random) -> KeyValue:
    pair: KeyValue = pairs.add()
    pair.key = key
    _set(pair.value, rng)
    return pair


def _record(rng: random.Random, record: LogRecord, index: int) -> None:
    name = rng.choice(_EVENT_NAMES)
    where = rng.randrange(5)
    if where <= 1:
        _add(record.attributes, "event.name", rng).value.string_value = name
    elif where == 2:
        record.event_name = name
    elif where == 3:
        record.body.string_value = name
    else:
        _add(record.attributes, "event.name", rng)  # whatever kind of value
    if rng.random() < 0.3:
        record.body.string_value = rng.choice(_TEXTS + _EVENT_NAMES)
    elif rng.random() < 0.1:
        record.body.int_value = 7
    stamp = rng.randrange(4)
    if stamp == 0:
        _add(record.attributes, "event.timestamp", rng).value.string_value = rng.choice(_TIMESTAMPS)
    elif stamp == 1:
        _add(record.attributes, "event.timestamp", rng)
    if rng.random() < 0.6:
        record.time_unix_nano = 1795878790000000000 + rng.randrange(10**12)
    if rng.random() < 0.4:
        record.observed_time_unix_nano = 1795878791000000000 + rng.randrange(10**12)
    keys = list(_MAPPED_KEYS + _OTHER_KEYS)
    rng.shuffle(keys)
    for key in keys[: rng.randrange(len(keys))]:
        pair = _add(record.attributes, key, rng)
        if key in ("session.id", "prompt.id") and rng.random() < 0.6:
            pair.value.string_value = f"0f8fad5b-d9cb-469f-a165-{index:012d}"
        elif key == "event.sequence" and rng.random() < 0.6:
            pair.value.int_value = index
        elif key == "organization.id" and rng.random() < 0.5:
            pair.value.string_value = rng.choice(("acme", "other-org"))
    if rng.random() < 0.15:  # a key twice: the last one counts
        _add(record.attributes, rng.choice(_MAPPED_KEYS), rng)
    record.severity_number = rng.choice((SeverityNumber.SEVERITY_NUMBER_UNSPECIFIED, SeverityNumber.SEVERITY_NUMBER_INFO))
    if rng.random() < 0.2:
        record.trace_id = bytes(rng.randrange(256) for _ in range(16))


def synthetic_request(seed: int) -> otlp.ExportLogsServiceRequest:
    rng = random.Random(seed)
    request = otlp.ExportLogsServiceRequest()
    shared_resource: list[tuple[str, AnyValue]] = []
    index = 0
    for _ in range(rng.randrange(1, 4)):
        rl = request.resource_logs.add()
        if shared_resource and rng.random() < 0.5:
            for key, value in shared_resource:  # the same resource again, in another group
                pair = rl.resource.attributes.add()
                pair.key = key
                pair.value.CopyFrom(value)
        else:
            keys = list(_RESOURCE_KEYS)
            rng.shuffle(keys)
            for key in keys[: rng.randrange(len(keys) + 1)]:
                pair = _add(rl.resource.attributes, key, rng)
                if key == "service.name" and rng.random() < 0.7:
                    pair.value.string_value = rng.choice(("claude-code", "cowork", "claude-code-desktop", "other"))
            shared_resource = [(kv.key, kv.value) for kv in rl.resource.attributes]
        for _ in range(rng.randrange(1, 3)):
            sl = rl.scope_logs.add()
            sl.scope.name = "com.anthropic.claude_code.events"
            for _ in range(rng.randrange(0, 12)):
                index += 1
                _record(rng, sl.log_records.add(), index)
    return request


# Inputs and their outputs -----------------------------------------------------------------------------------


def raw_batches(fixtures_dir: Path) -> Iterator[RawBatch]:
    for number, name in enumerate(CAPTURES):
        payload = (fixtures_dir / name).read_bytes()
        if name.endswith(".gz"):
            payload = gzip.decompress(payload)
        content_type = otlp.JSON if ".json" in name else otlp.PROTOBUF
        yield RawBatch("t1", "acme", "lic-1", content_type, RECEIVED_NS + number, f"req-{number}", 1, 1, 1, payload)
    for seed in range(60):
        request = synthetic_request(seed)
        if seed % 5 == 4:  # the same request as OTLP/JSON (whose trace ids are hex, which json_format does not write)
            for record in (r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records):
                record.ClearField("trace_id")
            payload = otlp.encode_message(request, otlp.Encoding.JSON)
            content_type = otlp.JSON
        else:
            payload, content_type = request.SerializeToString(), otlp.PROTOBUF
        yield RawBatch(f"t{seed % 3}", rng_org(seed), f"lic-{seed}", content_type, RECEIVED_NS + seed * 1_000_001,
                       f"syn-{seed}", 1, 1, 1, payload)
    # Payloads that cannot be decoded: their dead-letter reasons.
    yield RawBatch("t1", "acme", "lic-1", otlp.PROTOBUF, RECEIVED_NS, "bad-pb", 1, 1, 1, b"\x0a\xff\xff\xff")
    yield RawBatch("t1", "acme", "lic-1", otlp.JSON, RECEIVED_NS, "bad-json", 1, 1, 1, b'{"resourceLogs": [}')
    yield RawBatch("t1", "acme", "lic-1", otlp.JSON, RECEIVED_NS, "bad-shape", 1, 1, 1,
                   b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "my ssn"}]}]}]}')


def rng_org(seed: int) -> str:
    return "acme" if seed % 2 else "other-org"


def transform_digest(fixtures_dir: Path) -> str:
    logging.getLogger("redactor").setLevel(logging.ERROR)  # one "content withheld" warning per refused field
    digest = hashlib.sha256()
    batches = list(raw_batches(fixtures_dir))
    for engine in (StandIn(), None):
        for policy in POLICIES:
            for batch in batches:
                stats = TransformStats()
                try:
                    for event in transform_batch(batch, Lookup(engine), policy, stats):
                        key, value, headers = canonical_event.encode(event, KEY, batch.request_id)
                        digest.update(json.dumps([key.hex(), value.hex(), [[n, v.hex()] for n, v in headers]])
                                      .encode())
                except BatchRejected as exc:
                    digest.update(f"rejected {exc}".encode())
                digest.update(json.dumps([stats.records_in, stats.events_out, stats.dropped_other, stats.other_kept,
                                          stats.withheld_fields, sorted(stats.redactions.items())]).encode())
    return digest.hexdigest()


def mapping_digest(fixtures_dir: Path) -> str:
    """``map_record`` (attributes read, mapped, the event id) for every record, with either attribute policy."""
    digest = hashlib.sha256()
    received = datetime(2026, 11, 28, 15, 14, 0, 250000, tzinfo=UTC)
    for batch in raw_batches(fixtures_dir):
        try:
            request = otlp.decode_request(batch.payload, batch.encoding, otlp.ExportLogsServiceRequest)
        except otlp.PayloadError:
            continue
        for rl in request.resource_logs:
            resource = attributes_of(rl.resource.attributes)
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    for keep in (True, False):
                        mapped = map_record(record, resource, tenant=batch.tenant, org=batch.org,
                                            plane_by_service=PLANES, default_plane="claude_code",
                                            keep_unknown_attributes=keep, received_at=received)
                        answer = [mapped.event_type, mapped.event_id, mapped.columns, mapped.raw_content,
                                  mapped.content_lengths, mapped.all_other_attributes()]
                        digest.update(repr(answer).encode())
    return digest.hexdigest()


def test_the_transform_output_is_pinned(fixtures_dir: Path) -> None:
    assert transform_digest(fixtures_dir) == EXPECTED_TRANSFORM


def test_the_mapping_output_is_pinned(fixtures_dir: Path) -> None:
    assert mapping_digest(fixtures_dir) == EXPECTED_MAPPING


def test_the_transform_makes_events_as_their_constructor_would(fixtures_dir: Path) -> None:
    """The transform builds each event from its fields' values (``CanonicalEvent.from_fields``): the same event,
    fields in the same order, as ``CanonicalEvent(**fields)``, and the same JSON as the field-by-field encoding."""
    logging.getLogger("redactor").setLevel(logging.ERROR)
    for batch in raw_batches(fixtures_dir):
        try:
            events = list(transform_batch(batch, Lookup(StandIn()), POLICIES[0], TransformStats()))
        except BatchRejected:
            continue
        for event in events:
            assert tuple(vars(event)) == EVENT_COLUMNS
            constructed = CanonicalEvent(**vars(event))
            assert constructed == event and tuple(vars(constructed)) == EVENT_COLUMNS
            assert event.to_json() == _field_by_field_json(event)


def _field_by_field_json(event: CanonicalEvent) -> bytes:
    data = dict(vars(event))
    data["event_time"] = event.event_time.isoformat()
    data["received_at"] = event.received_at.isoformat()
    data["cost"] = None if event.cost is None else str(event.cost)
    try:
        return orjson.dumps(data)
    except TypeError:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def test_the_synthetic_batches_reach_the_branches_they_are_for(fixtures_dir: Path) -> None:
    """The digests mean something only if the inputs are varied: events of every kind kept and dropped,
    content masked and withheld, batches rejected."""
    logging.getLogger("redactor").setLevel(logging.ERROR)
    stats = TransformStats()
    rejected = 0
    event_types: set[str] = set()
    for policy in POLICIES[:2]:
        for batch in raw_batches(fixtures_dir):
            try:
                event_types.update(e.event_type for e in transform_batch(batch, Lookup(StandIn()), policy, stats))
            except BatchRejected:
                rejected += 1
    assert rejected == 6
    assert {"user_prompt", "tool_result", "tool_decision", "api_request", "api_error", "unknown"} <= event_types
    assert stats.dropped_other > 0 and stats.withheld_fields > 0
    assert stats.redactions["EMAIL_ADDRESS"] > 0 and stats.redactions["NUMBER"] > 0
    assert stats.events_out > 500


if __name__ == "__main__":
    from tests.conftest import FIXTURES

    print("EXPECTED_TRANSFORM =", repr(transform_digest(FIXTURES)))
    print("EXPECTED_MAPPING =", repr(mapping_digest(FIXTURES)))
