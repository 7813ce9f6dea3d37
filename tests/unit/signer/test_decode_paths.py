"""The signer's shortcuts in reading a canonical message give what the general reading gives, and refuse what
it refuses: the headers as ``encode_value`` writes them, the MAC from copied hash states, the scope of a key
remembered per (plane, event type), and the range checks of only the integers a shape holds."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any, NamedTuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.signer.rows import decode_row
from services.signer.worker import decode_authenticated_row
from shared.canonical import BIGINT_RANGE, INTEGER_COLUMNS, INTEGER_RANGE
from shared.messages import InvalidMessage, canonical_event
from shared.messages.auth import (
    AUDITCTL_SCOPE,
    KEY_ID_HEADER,
    MAC_HEADER,
    REDACTOR_SCOPE,
    REPORTER_SCOPE,
    Keyring,
    KeyScope,
    MessageKey,
    NameSet,
)
from tests.unit.signer.test_rows import message

REDACTOR = MessageKey.of(b"d" * 32, "redactor", REDACTOR_SCOPE)
REPORTER = MessageKey.of(b"p" * 32, "reporter", REPORTER_SCOPE)
UNSCOPED = MessageKey.of(b"u" * 32, "unscoped")
INTRUDER = MessageKey.of(b"x" * 32, "intruder", REDACTOR_SCOPE)
KEYRING = Keyring([REDACTOR, REPORTER, UNSCOPED])
EXAMPLES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Message(NamedTuple):
    value: Any
    headers: Any


def outcome(decode: Callable[[], Any]) -> tuple[str, Any]:
    """What a decode gives: its value, or the class and text of what it raised."""
    try:
        return "value", decode()
    except Exception as exc:  # any exception is an outcome to compare
        return type(exc).__name__, str(exc)


class _OddName(str):
    """A header name that is a str of another type: the shortcut leaves it to the general path."""


_HEADER_VALUES = st.one_of(
    st.binary(max_size=80), st.none(), st.text(max_size=10), st.builds(bytearray, st.binary(max_size=8)),
    st.sampled_from([b"", b"e" * 129, b"\xff", b"e1", "é".encode(), b"req-1", b"a" * 65]),
)


def _some_value(draw: st.DrawFn, event_id: str) -> bytes:
    return draw(st.sampled_from([b'{"a":1}', b"x" * 5000, json.dumps(message(event_id=event_id)).encode()]))


@st.composite
def canonical_messages(draw: st.DrawFn, value_of: Callable[[st.DrawFn, str], bytes] = _some_value) -> Message:
    """A message as encode_value writes it, then (mostly) changed: headers swapped, added, dropped, of other
    types or forms, values altered; the MAC made by an accepted key, an intruder, or over other bytes. The
    value is ``value_of``'s for the event id of the headers."""
    event_id = draw(st.sampled_from(["e1", "bench-00000001", "a:b.c_d-e", "e" * 128]))
    value = value_of(draw, event_id)
    key = draw(st.sampled_from([REDACTOR, REPORTER, UNSCOPED, INTRUDER]))
    request_id = draw(st.sampled_from([None, "req-1", "r" * 64]))
    headers: list[Any] = canonical_event.encode_value(event_id, value, key, request_id)
    payload = value
    sent: Any = value
    for _ in range(draw(st.integers(0, draw(st.sampled_from([0, 3]))))):  # unchanged headers in half the draws
        change = draw(st.sampled_from(["value", "name", "pair", "drop", "add", "swap", "mac", "other value"]))
        index = draw(st.integers(0, len(headers) - 1)) if headers else 0
        pair = headers[index] if headers and isinstance(headers[index], tuple) and len(headers[index]) == 2 else None
        if change == "value" and pair is not None:
            headers[index] = (pair[0], draw(_HEADER_VALUES))
        elif change == "name" and pair is not None:
            name = draw(st.sampled_from(["replay.x", "requeue.y", "extra", "", _OddName(str(pair[0])), 7]))
            headers[index] = (name, pair[1])
        elif change == "pair" and pair is not None:
            headers[index] = draw(st.sampled_from([list(pair), (*pair, b""), pair[:1], "ab", None]))
        elif change == "drop" and headers:
            del headers[index]
        elif change == "add":
            name = draw(st.sampled_from(["event_id", "request_id", KEY_ID_HEADER, MAC_HEADER, "replay.n", "x"]))
            headers.insert(draw(st.integers(0, len(headers))), (name, draw(_HEADER_VALUES)))
        elif change == "swap" and len(headers) > 1:
            other = draw(st.integers(0, len(headers) - 1))
            headers[index], headers[other] = headers[other], headers[index]
        elif change == "mac":
            forms = [b"0" * 64, b"", key.mac(canonical_event.DOMAIN, [b"e1", b"", payload]).encode()]
            for position, header in enumerate(headers):
                if isinstance(header, tuple) and len(header) == 2 and header[0] == MAC_HEADER and isinstance(
                        header[1], bytes):
                    forms.append(header[1].upper())
                    headers[position] = (MAC_HEADER, draw(st.sampled_from(forms)))
        elif change == "other value":
            sent = draw(st.sampled_from([b"", None, "text", bytearray(payload), payload + b" "]))
    shape = draw(st.sampled_from([list, tuple]))
    return Message(sent, shape(headers))


@EXAMPLES
@given(canonical_messages())
def test_the_usual_headers_shortcut_gives_what_the_general_path_gives(msg: Message) -> None:
    general = outcome(lambda: canonical_event._decode_any(msg.value, msg.headers, KEYRING))
    usual = canonical_event._decode_usual(msg.value, msg.headers, KEYRING)
    if usual is not None:  # the shortcut only ever accepts, and only what the general path accepts
        assert general == ("value", usual)
    assert outcome(lambda: canonical_event.decode(msg.value, msg.headers, KEYRING)) == general


def test_the_usual_headers_take_the_shortcut() -> None:
    value = json.dumps(message()).encode()
    for request_id in (None, "req-1"):
        for shape in (list, tuple):
            headers = shape(canonical_event.encode_value("e1", value, REDACTOR, request_id))
            usual = canonical_event._decode_usual(value, headers, KEYRING)
            assert usual is not None
            assert usual == canonical_event._decode_any(value, headers, KEYRING)
            assert (usual.event_id, usual.request_id, usual.producer) == ("e1", request_id, "redactor")


@EXAMPLES
@given(secret=st.binary(min_size=32, max_size=1024), domain=st.binary(max_size=40),
       fields=st.lists(st.one_of(st.binary(max_size=40), st.sampled_from([b"x" * 4095, b"y" * 4096, b"z" * 9000])),
                       max_size=5))
def test_the_mac_is_the_standard_hmac_and_made_accepts_exactly_its_hex(secret: bytes, domain: bytes,
                                                                         fields: list[bytes]) -> None:
    key = MessageKey.of(secret)
    expected = hmac.new(secret, domain + b"".join(len(f).to_bytes(8, "big") + f for f in fields),
                        hashlib.sha256).hexdigest()
    for _ in range(2):  # the keyed states are made by the first call and copied by the next
        assert key.mac(domain, fields) == expected
        assert key.made(expected.encode(), domain, fields)
        assert not key.made(expected.upper().encode(), domain, fields) or expected == expected.upper()
        assert not key.made(expected[:-1].encode(), domain, fields)
        assert not key.made(expected.encode() + b"0", domain, fields)


_NAMES = st.one_of(st.sampled_from(["claude_code", "access", "erasure", "user_prompt", "access_record", "x", ""]),
                   st.text(max_size=4), st.none(), st.integers(), st.just(_OddName("access")))


@EXAMPLES
@given(pairs=st.lists(st.tuples(_NAMES, _NAMES), max_size=20))
def test_a_scope_permits_what_its_name_sets_admit_however_often_asked(pairs: list[tuple[Any, Any]]) -> None:
    scopes = [REDACTOR_SCOPE, REPORTER_SCOPE, AUDITCTL_SCOPE,
              KeyScope(NameSet(frozenset({"x"})), NameSet(frozenset({"x", "access"}), excluding=True))]
    for plane, event_type in pairs * 2:
        for scope in scopes:
            admitted = scope.planes.admits(plane) and scope.event_types.admits(event_type)
            assert scope.permits(plane, event_type) is admitted


_BOUNDS = {name: INTEGER_RANGE if name in INTEGER_COLUMNS else BIGINT_RANGE
           for name in ("event_sequence", "input_tokens", "output_tokens", "cache_read_tokens",
                        "cache_creation_tokens", "tokens_used", "duration_ms", "status_code", "attempt")}
_EDGES = [0, 1, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 2**70]


@EXAMPLES
@given(st.fixed_dictionaries({name: st.one_of(st.none(), st.sampled_from(_EDGES), st.integers())
                              for name in _BOUNDS}))
def test_only_integers_in_their_columns_range_are_taken_whatever_shape_came_before(numbers: dict[str, Any]) -> None:
    # Each shape remembers which integer fields it holds numbers in; the first out of range (in column order)
    # is the one named, as when every integer field was checked.
    for changes in ({name: 1 if number is not None else None for name, number in numbers.items()}, numbers):
        raw = json.dumps(message(**changes)).encode()
        wrong = [name for name, bounds in _BOUNDS.items() if changes[name] is not None and changes[name] not in bounds]
        result = outcome(lambda: decode_row(raw))  # noqa: B023 - called at once
        if wrong:
            assert result[0] == "ValueError" and result[1].startswith(f"{wrong[0]} is out of range for its column")
        else:
            assert result[0] == "value"
            assert all(result[1].values[name] == number for name, number in changes.items())


class _Record(NamedTuple):
    value: Any
    headers: Any


def _reference_row(record: _Record | Message, keyring: Keyring) -> Any:
    """decode_authenticated_row as it was: the general envelope, the row, the event id, the scope."""
    envelope = canonical_event._decode_any(record.value, record.headers, keyring)
    row = decode_row(envelope.value)
    if row.event_id != envelope.event_id:
        raise InvalidMessage("canonical event's event_id differs from its authenticated header")
    envelope.check_scope(row.values.get("plane"), row.values.get("event_type"))
    return row


@EXAMPLES
@given(event_id=st.sampled_from(["e1", "e2"]), header_id=st.sampled_from(["e1", "e2"]),
       key=st.sampled_from([REDACTOR, REPORTER, UNSCOPED, INTRUDER]),
       plane=st.sampled_from(["claude_code", "access", "erasure", 7, None]),
       event_type=st.sampled_from(["api_request", "access_record", "erasure", None]),
       request_id=st.sampled_from([None, "req-1"]))
def test_a_row_is_decoded_and_refused_as_the_general_path_does(event_id: str, header_id: str, key: MessageKey,
                                                                plane: Any, event_type: Any,
                                                                request_id: str | None) -> None:
    value = json.dumps(message(event_id=event_id, plane=plane, event_type=event_type)).encode()
    record = _Record(value, canonical_event.encode_value(header_id, value, key, request_id))
    expected = outcome(lambda: _reference_row(record, KEYRING))
    assert outcome(lambda: decode_authenticated_row(record, KEYRING)) == expected
