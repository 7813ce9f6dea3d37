"""The topic messages: every header checked, every message a stage acts on authenticated, and no input
whatever (header names, values, sizes) raising anything but ``InvalidMessage``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from shared.canonical import EVENT_COLUMNS, CanonicalEvent
from shared.messages import InvalidMessage, canonical_event, dead_letter, raw_batch
from shared.messages.auth import (
    AUDITCTL_SCOPE,
    REDACTOR_SCOPE,
    REPORTER_SCOPE,
    AuthenticationFailed,
    KeyFileError,
    Keyring,
    KeyScope,
    MessageKey,
    NameSet,
    ensure_message_keys,
    load_keyring,
    load_scoped_keyring,
    load_signing_key,
    parse_key_file,
)

RECEIVER = MessageKey.of(b"r" * 32, "receiver")
REDACTOR = MessageKey.of(b"d" * 32, "redactor")
REPORTER = MessageKey.of(b"p" * 32, "reporter")
INTRUDER = MessageKey.of(b"x" * 32, "intruder")
RAW_KEYRING = Keyring([RECEIVER])
PAYLOAD = b"\x0a\x02\x08\x01"


def raw_headers(payload: bytes = PAYLOAD, key: MessageKey = RECEIVER, kind: raw_batch.Kind = "logs",
                **changes: object) -> list[tuple[str, bytes]]:
    fields: dict[str, object] = {"tenant": "acme", "org": "acme", "license_id": "7d4f0a52-1c3b", "content_type":
                                 "application/x-protobuf", "received_at_ns": 1_795_878_790_000_000_000,
                                 "request_id": "a" * 32, "record_count": 3, "chunk_index": 1, "chunk_total": 2}
    fields.update(changes)
    return raw_batch.encode(raw_batch.RawBatch(**fields, payload=payload), key, kind)  # type: ignore[arg-type]


def replaced(headers: list[tuple[str, bytes]], name: str, value: bytes | None) -> list[tuple[str, bytes]]:
    kept = [(k, v) for k, v in headers if k != name]
    return kept if value is None else [*kept, (name, value)]


def test_a_raw_batch_round_trips_with_every_field() -> None:
    batch = raw_batch.decode(PAYLOAD, raw_headers(), RAW_KEYRING, "logs")
    assert (batch.tenant, batch.org, batch.license_id, batch.request_id) == ("acme", "acme", "7d4f0a52-1c3b", "a" * 32)
    assert (batch.record_count, batch.chunk_index, batch.chunk_total, batch.payload) == (3, 1, 2, PAYLOAD)
    assert batch.received_at == datetime.fromtimestamp(1_795_878_790, UTC)


def test_replay_and_requeue_provenance_headers_are_allowed_and_not_covered() -> None:
    headers = [*raw_headers(), ("replay.id", b"r1"), ("requeue.source", b"dlq/0/4")]
    assert raw_batch.decode(PAYLOAD, headers, RAW_KEYRING, "logs").tenant == "acme"


@pytest.mark.parametrize("name", [*raw_batch.FIELDS])
def test_changing_any_authenticated_header_is_refused(name: str) -> None:
    headers = raw_headers()
    original = dict(headers)[name]
    # A value that passes the format checks, so it is the MAC that refuses it.
    changed = {"received_at": b"1795878790000000001", "record_count": b"4", "chunk": b"2/2",
               "content_type": b"application/json"}.get(name, original[:-1] + b"9")
    with pytest.raises(InvalidMessage, match="authentication failed"):
        raw_batch.decode(PAYLOAD, replaced(headers, name, changed), RAW_KEYRING, "logs")


def test_unsigned_forged_foreign_and_moved_batches_are_refused() -> None:
    unsigned = [(k, v) for k, v in raw_headers() if not k.startswith("auth.")]
    with pytest.raises(InvalidMessage, match="not authenticated"):
        raw_batch.decode(PAYLOAD, unsigned, RAW_KEYRING, "logs")
    with pytest.raises(InvalidMessage, match="authentication failed"):
        raw_batch.decode(PAYLOAD + b"\x00", raw_headers(), RAW_KEYRING, "logs")  # payload swapped
    with pytest.raises(InvalidMessage, match="does not accept"):
        raw_batch.decode(PAYLOAD, raw_headers(key=INTRUDER), RAW_KEYRING, "logs")
    with pytest.raises(InvalidMessage, match="authentication failed"):
        raw_batch.decode(PAYLOAD, raw_headers(kind="logs"), RAW_KEYRING, "metrics")  # logs batch on metrics


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("received_at", b"9" * 30, "received_at is malformed"),  # was an OverflowError in the redactor
        ("received_at", b"9" * 21, "received_at is out of range"),
        ("received_at", b"-1", "received_at is malformed"),
        ("received_at", b"1e400", "received_at is malformed"),
        ("tenant", b"", "tenant is malformed"),
        ("tenant", b"a:b", "tenant is malformed"),
        ("tenant", "t\u00e9".encode(), "tenant is not ASCII"),
        ("tenant", b"t" * 300, "longer than"),
        ("org", None, "no org header"),
        ("chunk", b"3/2", "chunk is out of range"),
        ("record_count", b"99999999999", "record_count is out of range"),
        ("content_type", b"text/plain", "content_type"),
        ("msg", b"x", "unexpected header 'msg'"),  # was a KeyError in the redactor's log call
        ("tenant\udcff", b"x", "unexpected header"),
    ],
)
def test_bad_headers_are_refused_with_a_reason(name: str, value: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        raw_batch.decode(PAYLOAD, replaced(raw_headers(), name, value), RAW_KEYRING, "logs")


def test_duplicate_headers_none_values_and_non_pairs_are_refused() -> None:
    with pytest.raises(InvalidMessage, match="appears twice"):
        raw_batch.decode(PAYLOAD, [*raw_headers(), ("tenant", b"other")], RAW_KEYRING, "logs")
    with pytest.raises(InvalidMessage, match="headers"):
        raw_batch.decode(PAYLOAD, [("tenant",)] * 40, RAW_KEYRING, "logs")
    with pytest.raises(InvalidMessage):
        raw_batch.decode(PAYLOAD, [(b"tenant", b"x")], RAW_KEYRING, "logs")
    with pytest.raises(InvalidMessage):
        raw_batch.decode(None, replaced(raw_headers(), "tenant", None), RAW_KEYRING, "logs")


def test_random_headers_and_values_raise_nothing_but_invalid_message() -> None:
    rng = random.Random(15)
    names = [*raw_batch.FIELDS, "auth.key_id", "auth.mac", "msg", "args", "exc_info", "", "replay.x", "dlq.error"]
    good = raw_headers()
    for _ in range(3000):
        headers: list[object] = list(good) if rng.random() < 0.5 else []
        for _ in range(rng.randrange(6)):
            header_value = rng.choice([None, b"", os.urandom(rng.randrange(40)), b"9" * rng.randrange(1, 400),
                                       str(rng.randrange(-10, 10**25)).encode(), b"1/0", b"\xff\xfe"])
            headers.append((rng.choice(names), header_value))
        if rng.random() < 0.05:
            headers.append(rng.choice([("x",), (1, b"v"), "ab", None]))
        value: object = rng.choice([PAYLOAD, None, os.urandom(rng.randrange(64)), "text"])
        kinds: tuple[raw_batch.Kind, ...] = ("logs", "metrics")
        for kind in kinds:
            try:
                raw_batch.decode(value, headers, RAW_KEYRING, kind)
            except InvalidMessage:
                continue
            # Only the receiver's own, untouched batch passes (extra headers may be provenance ones).
            assert (kind, value) == ("logs", PAYLOAD) and set(good) <= set(headers)


def _event(**changes: object) -> CanonicalEvent:
    at = datetime(2026, 11, 28, 15, 13, 7, tzinfo=UTC)
    fields: dict[str, object] = {"event_id": "e" * 64, "tenant_id": "acme", "org_id": "acme", "license_id": "l",
                                 "plane": "claude_code", "event_type": "user_prompt", "event_time": at,
                                 "received_at": at}
    fields.update(changes)
    return CanonicalEvent(**fields)  # type: ignore[arg-type]


def test_canonical_events_are_accepted_from_every_key_in_the_keyring_and_name_their_producer() -> None:
    keyring = Keyring([REDACTOR, REPORTER])  # a second authorised producer holds a key of its own
    for key in (REDACTOR, REPORTER):
        _, value, headers = canonical_event.encode(_event(), key, "req-1")
        message = canonical_event.decode(value, headers, keyring)
        assert (message.event_id, message.request_id, message.producer) == ("e" * 64, "req-1", key.label)
        assert canonical_event.decode_event(value, headers, keyring) == _event()


def test_a_keyring_verifies_each_message_alone_whatever_it_verified_before() -> None:
    # The keyring keeps an HMAC state per key and domain: no message may leave anything in it for the next.
    keyring = Keyring([REDACTOR, RECEIVER])
    event_ids = [f"e{i}".encode() for i in range(3)]
    for domain in (canonical_event.DOMAIN, b"raw-batch/v1/logs", canonical_event.DOMAIN):
        for key in (REDACTOR, RECEIVER):
            for event_id in event_ids:
                fields = [event_id, b"", b"value " + event_id]
                assert keyring.verify(key.key_id, key.mac(domain, fields), domain, fields) is key
                with pytest.raises(AuthenticationFailed):
                    keyring.verify(key.key_id, key.mac(domain, fields), domain, [event_id, b"", b"other"])
                with pytest.raises(AuthenticationFailed):  # the field boundaries are covered too
                    keyring.verify(key.key_id, key.mac(domain, fields), domain, [event_id + b"v", b"", fields[2][1:]])


def test_a_canonical_event_for_another_tenant_cannot_be_made_without_a_key() -> None:
    keyring = Keyring([REDACTOR])
    _, value, headers = canonical_event.encode(_event(), REDACTOR)
    forged = value.replace(b'"tenant_id":"acme"', b'"tenant_id":"globex"')
    with pytest.raises(InvalidMessage, match="authentication failed"):
        canonical_event.decode(forged, headers, keyring)
    with pytest.raises(InvalidMessage, match="does not accept"):
        canonical_event.decode(*canonical_event.encode(_event(tenant_id="globex"), INTRUDER)[1:], keyring)
    with pytest.raises(InvalidMessage, match="not authenticated"):
        canonical_event.decode(value, [("event_id", b"e" * 64)], keyring)
    with pytest.raises(InvalidMessage, match="authentication failed"):  # the id header swapped
        canonical_event.decode(value, replaced(headers, "event_id", b"f" * 64), keyring)
    with pytest.raises(InvalidMessage, match="differs from its header"):  # authenticated, but inconsistent
        canonical_event.decode_event(value, canonical_event.encode_value("f" * 64, value, REDACTOR), keyring)


def test_the_mac_is_hmac_sha256_over_the_domain_and_length_prefixed_fields_whatever_came_before() -> None:
    """The keyed state is made once per domain and copied: every MAC must still be the plain HMAC of its own
    domain and fields, however the calls interleave."""
    secret = b"k" * 32
    key = MessageKey.of(secret)

    def plain(domain: bytes, fields: list[bytes]) -> str:
        return hmac.new(secret, domain + b"".join(len(f).to_bytes(8, "big") + f for f in fields),
                        hashlib.sha256).hexdigest()

    calls = [(b"canonical-event/v1", [b"e1", b"", b"{}"]), (b"raw-batch/v1/logs", [b"acme", b"x" * 5000]),
             (b"canonical-event/v1", [b"e2", b"r", b'{"a":1}']), (b"canonical-event/v1", []),
             (b"raw-batch/v1/logs", [b"y" * 4096, b"a", b"z" * 10_000, b"", b"w" * 4095])]  # large fields fed alone
    for domain, fields in calls * 2:
        assert key.mac(domain, fields) == plain(domain, fields)
    assert key == MessageKey.of(secret) and hash(key) == hash(MessageKey.of(secret))


def test_a_canonical_events_json_holds_every_field_in_order() -> None:
    event = _event(cost=Decimal("0.006850"), attributes={"big": 2**70, "n": [1, "x"]}, content={"prompt": "é"})
    data = json.loads(event.to_json())
    assert list(data) == list(EVENT_COLUMNS)
    expected = {name: getattr(event, name) for name in EVENT_COLUMNS}
    expected.update(event_time=event.event_time.isoformat(), received_at=event.received_at.isoformat(),
                    cost="0.006850")
    assert data == expected
    assert CanonicalEvent.from_json(event.to_json()) == event


def test_dead_letter_context_is_checked_and_never_overflows() -> None:
    headers = dead_letter.encode_headers("otel.logs.raw", 2, 41, "InvalidMessage: x", "redactor", raw_headers())
    context = dead_letter.decode(headers)
    assert (context.source_topic, context.source_partition, context.source_offset) == ("otel.logs.raw", 2, 41)
    assert dict(context.original_headers)["auth.mac"] == dict(raw_headers())["auth.mac"]  # kept for the requeue
    for name, value in (("dlq.failed_at", b"9" * 40), ("dlq.failed_at", b"99999999999999999999"),
                        ("dlq.source_partition", b"99999999999"), ("dlq.source_topic", b"a/b"),
                        ("dlq.stage", b"Stage!"), ("dlq.source_offset", None)):
        with pytest.raises(InvalidMessage):
            dead_letter.decode(replaced(headers, name, value))


def test_key_files_fail_fast_and_keys_never_show_in_repr(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="RAW_AUTH_KEY_FILE is not set"):
        load_keyring("", "RAW_AUTH_KEY_FILE")
    with pytest.raises(KeyFileError, match=r"RAW_AUTH_KEY_FILE: message key file .* does not exist"):
        load_signing_key(str(tmp_path / "missing.key"), "RAW_AUTH_KEY_FILE")
    (tmp_path / "open.key").write_text(base64.b64encode(b"k" * 32).decode())
    (tmp_path / "open.key").chmod(0o644)
    with pytest.raises(KeyFileError, match="group or others may access it"):
        load_keyring(str(tmp_path / "open.key"), "RAW_AUTH_KEY_FILE")
    (tmp_path / "short.key").write_text(base64.b64encode(b"k" * 8).decode())
    (tmp_path / "short.key").chmod(0o600)
    with pytest.raises(KeyFileError, match="line 1"):
        load_keyring(str(tmp_path / "short.key"), "RAW_AUTH_KEY_FILE")
    (tmp_path / "empty.key").write_text("# nothing yet\n")
    (tmp_path / "empty.key").chmod(0o600)
    with pytest.raises(KeyFileError, match="holds no message key"):
        load_keyring(str(tmp_path / "empty.key"), "X")
    assert "rrrr" not in repr(RECEIVER) and base64.b64encode(b"r" * 32).decode() not in repr(RAW_KEYRING)
    keys = parse_key_file(base64.b64encode(b"d" * 32).decode() + " redactor\n", "test")
    assert keys == [REDACTOR]


def test_init_keys_puts_the_producer_key_in_the_signers_keyring_once_with_its_scope(tmp_path: Path) -> None:
    raw, producer, keyring = tmp_path / "raw.key", tmp_path / "producer.key", tmp_path / "k" / "keyring"
    producers = [(producer, "redactor", REDACTOR_SCOPE)]
    assert ensure_message_keys(raw, producers, keyring) == [str(raw), str(producer), str(keyring)]
    assert ensure_message_keys(raw, producers, keyring) == []  # never overwrites or duplicates
    assert oct(raw.stat().st_mode & 0o777) == "0o600" and oct(keyring.stat().st_mode & 0o777) == "0o600"
    with keyring.open("a") as handle:  # a second authorised producer's key, added by the operator
        handle.write(base64.b64encode(b"p" * 32).decode() + " reporter planes=access event_types=access\n")
    accepted = load_scoped_keyring(str(keyring), "CANONICAL_AUTH_KEYRING_FILE")
    assert accepted.key_ids == {load_signing_key(str(producer), "X").key_id, REPORTER.key_id}
    assert json.dumps(sorted(accepted.key_ids))  # key ids are plain text, fit for logs
    assert "planes=!access,erasure event_types=!access,erasure" in keyring.read_text()


def test_init_keys_gives_a_keyring_line_from_before_scopes_its_producers_scope(tmp_path: Path) -> None:
    raw, producer, keyring = tmp_path / "raw.key", tmp_path / "reporter.key", tmp_path / "keyring"
    ensure_message_keys(raw, [(producer, "reporter", REPORTER_SCOPE)], keyring)
    line = producer.read_text().strip()
    keyring.write_text(f"{line}\n")  # as init-keys wrote it before keys had scopes
    keyring.chmod(0o600)
    with pytest.raises(KeyFileError, match="line 1 has no planes= and no event_types="):
        load_scoped_keyring(str(keyring), "CANONICAL_AUTH_KEYRING_FILE")
    assert ensure_message_keys(raw, [(producer, "reporter", REPORTER_SCOPE)], keyring) == [str(keyring)]
    (key,) = load_scoped_keyring(str(keyring), "CANONICAL_AUTH_KEYRING_FILE")._keys.values()
    assert key.scope == REPORTER_SCOPE
    keyring.write_text(f"{line} planes=access,erasure event_types=access,erasure\n")  # the operator's choice
    assert ensure_message_keys(raw, [(producer, "reporter", REPORTER_SCOPE)], keyring) == []
    assert "planes=access,erasure" in keyring.read_text()


def test_keyring_scopes_are_parsed_and_checked_at_load() -> None:
    encoded = base64.b64encode(b"p" * 32).decode()
    (key,) = parse_key_file(f"{encoded} reporter planes=access event_types=access\n", "t", scoped=True)
    assert key.scope == REPORTER_SCOPE and key.label == "reporter"
    (key,) = parse_key_file(f"{encoded} planes=!access,erasure event_types=!access,erasure", "t", scoped=True)
    assert key.scope == REDACTOR_SCOPE and key.label == ""
    for line, problem in (
        (f"{encoded} reporter", "has no planes= and no event_types="),
        (f"{encoded} reporter planes=access", "has no event_types="),
        (f"{encoded} planes= event_types=access", "not a comma-separated list"),
        (f"{encoded} planes=! event_types=access", "not a comma-separated list"),
        (f"{encoded} planes=Access event_types=access", "not a comma-separated list"),
        (f"{encoded} planes=a,,b event_types=access", "not a comma-separated list"),
        (f"{encoded} planes=a planes=b event_types=access", "unknown or repeated"),
        (f"{encoded} plane=a event_types=access", "unknown or repeated"),
        (f"{encoded} one two planes=a event_types=a", "more than one label"),
        (f"{encoded} planes=a event_types=a\n{encoded} planes=b event_types=b", "line 2 repeats the key"),
    ):
        with pytest.raises(KeyFileError, match=problem):
            parse_key_file(line, "CANONICAL_AUTH_KEYRING_FILE", scoped=True)
    with pytest.raises(KeyFileError, match="only the signers' canonical keyring takes"):
        parse_key_file(f"{encoded} planes=access event_types=access", "RAW_AUTH_KEY_FILE")


def test_each_producers_scope_admits_its_own_events_only() -> None:
    assert REPORTER_SCOPE.permits("access", "access")
    assert not REPORTER_SCOPE.permits("claude_code", "user_prompt")
    assert not REPORTER_SCOPE.permits("access", "user_prompt") and not REPORTER_SCOPE.permits("erasure", "access")
    assert AUDITCTL_SCOPE.permits("erasure", "erasure") and not AUDITCTL_SCOPE.permits("access", "access")
    assert not AUDITCTL_SCOPE.permits("claude_code", "erasure")
    assert REDACTOR_SCOPE.permits("claude_code", "user_prompt") and REDACTOR_SCOPE.permits("cowork", "api_request")
    for plane, event_type in (("access", "access"), ("erasure", "erasure"), ("claude_code", "access"),
                              ("access", "user_prompt"), ("claude_code", "erasure")):
        assert not REDACTOR_SCOPE.permits(plane, event_type)
    assert not KeyScope(NameSet(frozenset({"a"}), True), NameSet(frozenset({"b"}), True)).permits(None, 3)
    assert str(REPORTER_SCOPE) == "planes=access event_types=access"


def test_a_canonical_message_outside_its_keys_scope_is_refused_without_payload_text() -> None:
    reporter = MessageKey.of(b"p" * 32, "reporter", REPORTER_SCOPE)
    _, value, headers = canonical_event.encode(_event(), reporter)
    message = canonical_event.decode(value, headers, Keyring([reporter]))
    with pytest.raises(InvalidMessage, match=r"key reporter .* may not sign") as refused:
        message.check_scope("claude_code", "user_prompt")
    assert "claude_code" not in str(refused.value) and "user_prompt" not in str(refused.value)
    message.check_scope("access", "access")
    unscoped = canonical_event.decode(value, headers, Keyring([MessageKey.of(b"p" * 32, "reporter")]))
    with pytest.raises(InvalidMessage, match="has no scope"):
        unscoped.check_scope("access", "access")
