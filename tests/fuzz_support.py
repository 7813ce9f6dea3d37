"""Hostile topic messages for the per-consumer fuzz tests: what a writer with broker access but without the
stages' keys could send, and what a buggy producer with the keys could. Seeded, so a failure reproduces.

``AUDIT_FUZZ_SEED`` picks the seed (fixed by default, so ``make test`` is deterministic) and
``AUDIT_FUZZ_MESSAGES`` how many hostile messages each test sends (a longer run: ``AUDIT_FUZZ_MESSAGES=2000``).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable

from shared import otlp
from shared.messages import canonical_event, raw_batch
from shared.messages.auth import MessageKey
from tests.messages_support import canonical_key, raw_headers, raw_key

Headers = list[tuple[str, bytes]]
Message = tuple[bytes | None, bytes | None, Headers]  # key, value, headers

SEED = int(os.environ.get("AUDIT_FUZZ_SEED", "1515"))
COUNT = int(os.environ.get("AUDIT_FUZZ_MESSAGES", "24"))
INTRUDER = MessageKey.of(b"an intruder's guess at the key!!", "intruder")
# Names that break naive code: LogRecord attributes (``extra=`` raised KeyError), our own, empty, odd bytes.
HEADER_NAMES = ["msg", "args", "exc_info", "message", "levelname", "tenant", "org", "license_id", "content_type",
                "received_at", "request_id", "record_count", "chunk", "event_id", "auth.key_id", "auth.mac", "",
                "dlq.stage", "replay.id", "\u00e9t\u00e9", "x" * 300]


def rng() -> random.Random:
    return random.Random(SEED)


def random_bytes(r: random.Random, most: int = 256) -> bytes:
    return r.randbytes(r.randrange(most))


def random_headers(r: random.Random) -> Headers:
    headers: Headers = []
    for _ in range(r.randrange(12)):
        value = r.choice([b"", random_bytes(r, 64), b"9" * r.randrange(1, 500), str(r.randrange(-10, 10**30)).encode(),
                          b"1/0", b"\xff\xfe", b"acme", b"globex"])
        headers.append((r.choice(HEADER_NAMES), value))
    return headers


def _replace(headers: Headers, name: str, value: bytes) -> Headers:
    return [(k, value if k == name else v) for k, v in headers]


def hostile_raw(r: random.Random, payload: bytes, kind: raw_batch.Kind, tenant: str) -> Message:
    """One raw batch the consumer must dead-letter: none of them may reach a chain or usage table."""
    key = tenant.encode()
    good = raw_headers(payload, tenant=tenant, kind=kind)
    choices: list[Callable[[], Message]] = [
        lambda: (random_bytes(r, 40) or None, random_bytes(r), random_headers(r)),
        lambda: (key, payload, [(k, v) for k, v in good if not k.startswith("auth.")]),  # unsigned injection
        lambda: (b"globex", payload, _replace(good, "tenant", b"globex")),  # another tenant under a valid MAC
        lambda: (key, payload, raw_headers(payload, tenant="globex", kind=kind, key=INTRUDER)),  # a guessed key
        lambda: (key, payload + b"\x00", good),  # payload swapped
        lambda: (key, payload, [*good, ("msg", b"boom")]),
        lambda: (key, payload, _replace(good, "received_at", b"9" * r.randrange(21, 400))),
        lambda: (key, None, good),  # a tombstone
        lambda: (key, payload, raw_headers(payload, tenant=tenant, kind="metrics" if kind == "logs" else "logs")),
        # Signed with the real key but not OTLP (a buggy receiver): refused by the payload decoder instead.
        lambda: (key, (garbage := random_bytes(r) + b"\xff"), raw_headers(garbage, tenant=tenant, kind=kind)),
        lambda: (key, (nested := b"[" * 200_000), raw_headers(nested, tenant=tenant, kind=kind,
                                                               content_type=otlp.JSON)),
        lambda: (key, payload, [*good, *good[:1]]),  # a header twice
    ]
    return r.choice(choices)()


def good_raw(payload: bytes, kind: raw_batch.Kind, tenant: str, request_id: str) -> Message:
    return tenant.encode(), payload, raw_headers(payload, tenant=tenant, kind=kind, request_id=request_id)


def hostile_canonical(r: random.Random, event_json: bytes, tenant: str) -> Message:
    """One canonical message the signer must dead-letter; ``event_json`` is a valid event of ``tenant``."""
    data = json.loads(event_json)
    other = json.dumps({**data, "tenant_id": "globex", "event_id": "forged-" + data["event_id"]}).encode()
    signed = canonical_event.encode_value(data["event_id"], event_json, canonical_key())
    huge = json.dumps({**data, "event_id": "huge-" + data["event_id"], "input_tokens": 10**30}).encode()
    deep = event_json[:-1] + b',"attributes":{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    choices: list[Callable[[], Message]] = [
        lambda: (random_bytes(r, 40) or None, random_bytes(r), random_headers(r)),
        lambda: (b"globex", other, [("event_id", b"forged-" + data["event_id"].encode())]),  # unsigned
        lambda: (b"globex", other, canonical_event.encode_value("forged-" + data["event_id"], other, INTRUDER)),
        lambda: (b"globex", other, signed),  # the MAC of another message
        lambda: (tenant.encode(), event_json, canonical_event.encode_value("other-id", event_json, canonical_key())),
        lambda: (tenant.encode(), huge, canonical_event.encode_value("huge-" + data["event_id"], huge,
                                                                      canonical_key())),
        lambda: (tenant.encode(), deep, canonical_event.encode_value(data["event_id"], deep, canonical_key())),
        lambda: (tenant.encode(), None, signed),
        lambda: (tenant.encode(), event_json, [*signed, ("msg", b"boom")]),
    ]
    return r.choice(choices)()


def unique_request_id(index: int) -> str:
    return f"fuzz-{time.time_ns()}-{index}"


__all__ = ["COUNT", "SEED", "good_raw", "hostile_canonical", "hostile_raw", "raw_key", "rng"]
