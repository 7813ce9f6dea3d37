"""decode_row: the signer's reading of a canonical message gives the same stored values as the event model,
and refuses what the model's types do not allow."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.signer.rows import ChainRow, decode_row
from shared.canonical import CanonicalEvent

T0 = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)


def message(**changes: Any) -> dict[str, Any]:
    event = CanonicalEvent(
        event_id="e1",
        tenant_id="t1",
        org_id="acme",
        license_id="lic",
        plane="claude_code",
        event_type="api_request",
        event_time=T0,
        received_at=T0 + timedelta(milliseconds=3),
        session_id="s1",
        model="claude-opus-5-5",
        input_tokens=1200,
        tokens_used=1637,
        cost=Decimal("0.006850"),
        content={"prompt": "hi <EMAIL>"},
        content_lengths={"prompt": 10},
        redacted_fields={"prompt": {"EMAIL": 1}},
        content_captured=True,
        attributes={"terminal.type": "xterm"},
    )
    data: dict[str, Any] = json.loads(event.to_json())
    data.update(changes)
    return data


def reference(raw: bytes) -> ChainRow:
    return ChainRow.of(CanonicalEvent.from_json(raw))


VALID: dict[str, tuple[dict[str, Any], bool]] = {
    # name: (changes to the message, whether the row takes the checked hashing path)
    "typical": ({}, True),
    "only required fields": (
        {k: v for k, v in message().items() if k in {"event_id", "tenant_id", "org_id", "license_id", "plane",
                                                       "event_type", "event_time", "received_at"}},
        True,
    ),
    "whole-second timestamp": ({"event_time": "2026-11-28T12:00:00+00:00"}, True),
    "offset timestamp becomes UTC": ({"event_time": "2026-11-28T14:00:00.5+02:00"}, True),
    "cost rounded as numeric(20, 6)": ({"cost": "0.0000005"}, True),
    "negative zero cost": ({"cost": "-0.0000001"}, True),
    "float attribute": ({"attributes": {"ratio": 0.25}}, False),
    "float written as 1e16": ({"attributes": {"x": 1e16}}, False),
    "integer beyond 64 bits": ({"attributes": {"big": 2**70}}, True),
    "integer beyond 2^53": ({"attributes": {"big": 2**60}}, True),
    "nested float": ({"attributes": {"x": [1, {"y": 2.5}]}}, False),
    "non-ASCII key": ({"attributes": {"ключ": "v"}}, False),
    "NUL in content": ({"content": {"prompt": "a\u0000b"}}, True),
    "NUL in a key": ({"attributes": {"a\u0000": "b"}}, True),
    "NUL in a text column": ({"user_email": "x\u0000@y"}, True),
    "null optional columns": ({"session_id": None, "cost": None, "success": None}, True),
    "booleans": ({"success": True, "claimed_org_mismatch": True}, True),
}


@pytest.mark.parametrize(("changes", "plain"), list(VALID.values()), ids=list(VALID))
def test_values_match_the_event_model(changes: dict[str, Any], plain: bool) -> None:
    data = message() | changes if "event_id" in changes else message(**changes)
    raw = json.dumps(data).encode()
    row = decode_row(raw)
    assert row.values == reference(raw).values
    assert (row.event_id, row.tenant_id, row.raw, row.plain) == ("e1", "t1", raw, plain)
    for column in ("event_time", "received_at"):
        assert row.values[column].tzinfo is UTC


def test_timestamps_are_converted_to_utc() -> None:
    row = decode_row(json.dumps(message(event_time="2026-11-28T14:00:00.5+02:00")).encode())
    assert row.values["event_time"] == datetime(2026, 11, 28, 12, 0, 0, 500000, tzinfo=UTC)


INVALID: dict[str, tuple[bytes, str]] = {
    "not JSON": (b"{", "Expecting"),
    "not an object": (b"[1, 2]", "not a JSON object"),
    "unknown field": (json.dumps(message(surprise=1)).encode(), "unknown fields"),
    "missing required field": (
        json.dumps({k: v for k, v in message().items() if k != "org_id"}).encode(),
        "lacks fields",
    ),
    "bool in an integer column": (json.dumps(message(input_tokens=True)).encode(), "input_tokens"),
    "float in an integer column": (json.dumps(message(input_tokens=1.5)).encode(), "input_tokens"),
    "string in a boolean column": (json.dumps(message(success="yes")).encode(), "success"),
    "null in a required column": (json.dumps(message(tenant_id=None)).encode(), "tenant_id"),
    "list as content": (json.dumps(message(content=["a"])).encode(), "content"),
    "naive timestamp": (json.dumps(message(event_time="2026-11-28T12:00:00")).encode(), "no UTC offset"),
    "not a timestamp": (json.dumps(message(received_at="yesterday")).encode(), "not an ISO 8601"),
    "cost not a number": (json.dumps(message(cost="cheap")).encode(), "not a decimal"),
    "cost infinite": (json.dumps(message(cost="Infinity")).encode(), "not a finite"),
    "cost as a JSON number": (json.dumps(message(cost=0.5)).encode(), "cost"),
}


@pytest.mark.parametrize(("raw", "error"), list(INVALID.values()), ids=list(INVALID))
def test_bad_messages_are_refused_with_a_reason(raw: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        decode_row(raw)
