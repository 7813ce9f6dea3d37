"""Authenticated topic messages for tests that write the topics themselves, with the keys the services use.

``tests/conftest.py`` provisions the key files once per run and names them in the environment, so the
services the tests start (in process or as processes) and these helpers agree.
"""

from __future__ import annotations

import os
import time

from shared import otlp
from shared.canonical import CanonicalEvent
from shared.messages import canonical_event, raw_batch
from shared.messages.auth import Keyring, MessageKey, load_keyring, load_scoped_keyring, load_signing_key


def raw_key() -> MessageKey:
    return load_signing_key(os.environ["RAW_AUTH_KEY_FILE"], "RAW_AUTH_KEY_FILE")


def raw_keyring() -> Keyring:
    return load_keyring(os.environ["RAW_AUTH_KEY_FILE"], "RAW_AUTH_KEY_FILE")


def canonical_key() -> MessageKey:
    return load_signing_key(os.environ["CANONICAL_AUTH_KEY_FILE"], "CANONICAL_AUTH_KEY_FILE")


def canonical_keyring() -> Keyring:
    return load_scoped_keyring(os.environ["CANONICAL_AUTH_KEYRING_FILE"], "CANONICAL_AUTH_KEYRING_FILE")


def raw_headers(payload: bytes, *, tenant: str, org: str | None = None, kind: raw_batch.Kind = "logs",
                content_type: str = otlp.PROTOBUF, received_at_ns: int | None = None, request_id: str = "req",
                record_count: int = 1, license_id: str = "lic-test", key: MessageKey | None = None,
                ) -> list[tuple[str, bytes]]:
    """The headers the receiver would give ``payload``."""
    batch = raw_batch.RawBatch(tenant, org or tenant, license_id, content_type,
                               time.time_ns() if received_at_ns is None else received_at_ns, request_id, record_count,
                               1, 1, payload)
    return raw_batch.encode(batch, key or raw_key(), kind)


def canonical_message(event: CanonicalEvent, key: MessageKey | None = None) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Key, value and headers as the redactor produces them."""
    return canonical_event.encode(event, key or canonical_key())


def canonical_headers(event_id: str, value: bytes, key: MessageKey | None = None) -> list[tuple[str, bytes]]:
    return canonical_event.encode_value(event_id, value, key or canonical_key())
