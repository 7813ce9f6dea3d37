"""Hash-chain arithmetic shared by the signer (which appends) and the verifier (which recomputes).

Canonical bytes, version 1: the RFC 8785 (JCS) serialisation of one JSON object holding every column in
``HASHED_COLUMNS``, with timestamps as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, microseconds), ``cost`` as a
decimal string with six places, bytes never present, and SQL NULL as JSON null.

    row_hash  = SHA-256( b"claude-audit-row-v1\\x00" || prev_hash || canonical_bytes )
    signature = Ed25519( row_hash )

``prev_hash`` of the first row of a chain is 32 zero bytes. docs/auditing.md is the full specification.

A checkpoint's signature covers ``b"claude-audit-checkpoint-v1\\x00" || JCS({tenant_id, chain_seq,
head_hash (lower-case hex), created_at, key_id})``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from shared.canonical import COST_SCALE, EVENT_COLUMNS
from shared.jcs import canonicalize

HASH_VERSION = 1
DOMAIN_TAG = b"claude-audit-row-v1\x00"
CHECKPOINT_DOMAIN_TAG = b"claude-audit-checkpoint-v1\x00"
GENESIS_HASH = bytes(32)

HASHED_COLUMNS: tuple[str, ...] = (*EVENT_COLUMNS, "chain_seq", "signing_key_id", "hash_version")

# rfc8785 refuses integers a double cannot hold exactly; tokens and sequences never get near that.
_MAX_SAFE_INT = 2**53 - 1


def format_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_cost(value: Decimal) -> str:
    return str(value.quantize(COST_SCALE))


def _normalise(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Decimal):
        return format_cost(value)
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return value if abs(value) <= _MAX_SAFE_INT else str(value)
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    raise TypeError(f"cannot hash a value of type {type(value).__name__}")


def canonical_bytes(row: Mapping[str, Any]) -> bytes:
    """The exact bytes an auditor hashes; ``row`` may be a database record or a dict of column values."""
    return canonicalize({column: _normalise(row[column]) for column in HASHED_COLUMNS})


def row_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    return hashlib.sha256(DOMAIN_TAG + prev_hash + canonical).digest()


def checkpoint_message(tenant_id: str, chain_seq: int, head_hash: bytes, created_at: datetime, key_id: str) -> bytes:
    """The bytes a checkpoint signature covers."""
    return CHECKPOINT_DOMAIN_TAG + canonicalize(
        {
            "tenant_id": tenant_id,
            "chain_seq": chain_seq,
            "head_hash": head_hash.hex(),
            "created_at": format_timestamp(created_at),
            "key_id": key_id,
        }
    )
