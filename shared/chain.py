"""Hash-chain arithmetic shared by the signer (which appends) and the verifier (which recomputes).

Canonical bytes, version 1: the RFC 8785 (JCS) serialisation of one JSON object holding every column in
``HASHED_COLUMNS``, with timestamps as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, microseconds), ``cost`` as a
decimal string with six places, bytes never present, and SQL NULL as JSON null.

    row_hash  = SHA-256( b"claude-audit-row-v1\\x00" || prev_hash || canonical_bytes )
    signature = Ed25519( row_hash )

``prev_hash`` of the first row of a chain is 32 zero bytes. docs/auditing.md is the full specification.

Version 2 (erasable content): the ``content`` column is replaced in the hashed object by
``content_digest`` (lower-case hex of SHA-256(salt || JCS(content))), with its own domain tag:

    row_hash  = SHA-256( b"claude-audit-row-v2\\x00" || prev_hash || canonical_bytes_v2 )

The content and its 32-byte salt are stored apart (``audit_content``) and can be erased; the digest stays.

A checkpoint's signature covers ``b"claude-audit-checkpoint-v1\\x00" || JCS({tenant_id, chain_seq,
head_hash (lower-case hex), created_at, key_id})``.
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from shared.canonical import COST_SCALE, EVENT_COLUMNS
from shared.jcs import canonicalize

if TYPE_CHECKING:
    import asyncpg

HASH_VERSION_PLAIN = 1
HASH_VERSION_ERASABLE = 2
# What the signer writes now; rows of version 1 stay verifiable.
HASH_VERSION = HASH_VERSION_ERASABLE
DOMAIN_TAG = b"claude-audit-row-v1\x00"
DOMAIN_TAG_V2 = b"claude-audit-row-v2\x00"
DOMAIN_TAGS = {HASH_VERSION_PLAIN: DOMAIN_TAG, HASH_VERSION_ERASABLE: DOMAIN_TAG_V2}
SALT_BYTES = 32
CHECKPOINT_DOMAIN_TAG = b"claude-audit-checkpoint-v1\x00"
GENESIS_HASH = bytes(32)

HASHED_COLUMNS: tuple[str, ...] = (*EVENT_COLUMNS, "chain_seq", "signing_key_id", "hash_version")
# Version 2: the same object with ``content`` replaced by the salted digest of it.
HASHED_COLUMNS_V2: tuple[str, ...] = (*(c for c in HASHED_COLUMNS if c != "content"), "content_digest")

# rfc8785 refuses integers a double cannot hold exactly; tokens and sequences never get near that.
_MAX_SAFE_INT = 2**53 - 1


def format_timestamp(value: datetime) -> str:
    # isoformat is C code and gives the same text as strftime("%Y-%m-%dT%H:%M:%S.%f") at a fraction of the cost.
    if value.tzinfo is UTC:  # what the database and the canonical topic hand over: skip the conversion
        return value.isoformat(timespec="microseconds")[:-6] + "Z"
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def format_cost(value: Decimal) -> str:
    return str(value.quantize(COST_SCALE))


def _normalise_json(value: Any) -> Any:
    """JSONB column values: integers a double cannot hold exactly become strings, as in every column."""
    kind = type(value)
    if kind is str or kind is bool or value is None or kind is float:
        return value
    if kind is int:
        return value if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT else str(value)
    if isinstance(value, Mapping):
        return {str(k): _normalise_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise_json(v) for v in value]
    raise TypeError(f"cannot hash a value of type {kind.__name__}")


def _normalise(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT else str(value)
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Decimal):
        return format_cost(value)
    return _normalise_json(value)


def _as_stored_json(value: Any) -> Any:
    """What a JSON value reads back as from JSONB, so the signer hashes what the verifier will see.

    JSONB keeps numbers as exact decimals: a float written as ``1e+16`` comes back as the integer
    10000000000000000. Text cannot hold NUL, and JSON has no NaN or infinity, so those become strings.
    """
    kind = type(value)
    if kind is str:
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if kind is float:
        if not math.isfinite(value):
            return str(value)
        text = repr(value)
        return int(Decimal(text)) if "e+" in text else value
    if isinstance(value, Mapping):
        return {_as_stored_json(str(k)): _as_stored_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_stored_json(v) for v in value]
    return value


def as_stored(values: dict[str, Any], json_columns: frozenset[str]) -> dict[str, Any]:
    """Column values exactly as PostgreSQL will hand them back, for hashing and for the insert alike."""
    for column, value in values.items():
        if value is None:
            continue
        if column in json_columns:
            values[column] = _as_stored_json(value)
        elif type(value) is str and "\x00" in value:
            values[column] = value.replace("\x00", "\ufffd")
        elif isinstance(value, Decimal):
            values[column] = stored_cost(value)
    return values


_ZERO_COST = Decimal("0.000000")


def stored_cost(value: Decimal) -> Decimal:
    """The cost as numeric(20, 6) stores it: rounded half away from zero to six places, zero unsigned."""
    stored = value.quantize(COST_SCALE, rounding=ROUND_HALF_UP)
    return stored if stored != 0 else _ZERO_COST


def canonical_bytes(row: Mapping[str, Any]) -> bytes:
    """The exact bytes an auditor hashes; ``row`` may be a database record or a dict of column values."""
    fast = _canonical_bytes_fast(row)
    if fast is not None:
        return fast
    return canonicalize({column: _normalise(row[column]) for column in HASHED_COLUMNS})


def _decimal_text(value: Any) -> str:
    if type(value) is Decimal:
        return str(value)
    raise TypeError(f"cannot hash a value of type {type(value).__name__}")


# The events of one request share their received_at, so the last few texts are worth keeping.
_utc_text = functools.lru_cache(maxsize=256)(format_timestamp)

_CHECKED_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER | orjson.OPT_UTC_Z


def canonical_bytes_checked(values: dict[str, Any]) -> bytes | None:
    """``canonical_bytes`` in one orjson call, for values the caller has checked: exactly the hashed columns,
    each of its column's type; timestamps in UTC; the cost rounded to six places as stored; JSON columns
    without floats and with ASCII keys only. None where the general path must decide: an integer beyond
    2^53."""
    if values["event_time"].microsecond == 0 or values["received_at"].microsecond == 0:
        values = dict(values)
        _whole_seconds_as_text(values)
    return _dumps_checked(values)


def _whole_seconds_as_text(values: dict[str, Any]) -> None:
    # orjson leaves out ".000000" on a whole second; the canonical form never does.
    for column in _TIMESTAMP_COLUMNS:
        value = values[column]
        if value.microsecond == 0:
            values[column] = _utc_text(value)


def _dumps_checked(values: dict[str, Any]) -> bytes | None:
    try:
        return orjson.dumps(values, default=_decimal_text, option=_CHECKED_OPTIONS)
    except orjson.JSONEncodeError:
        return None


# Columns whose Python values are not JSON as they are: timestamps and the exact decimal cost.
_TIMESTAMP_COLUMNS = ("event_time", "received_at")
_JSON_COLUMNS = ("content", "content_lengths", "redacted_fields", "attributes")
_SCALAR_TYPES = frozenset((str, int, bool, type(None)))


def json_is_plain(value: Any) -> bool:
    """True for JSON that compact, key-sorted orjson output writes exactly as RFC 8785 does: no floats, and
    only ASCII object keys (where sorting by code point and by UTF-16 unit agree). Integers are range-checked
    by orjson itself (OPT_STRICT_INTEGER)."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                return False
            item_kind = type(item)
            if item_kind is str or item_kind is int or item is None or item_kind is bool:
                continue
            if not json_is_plain(item):
                return False
        return True
    if kind is list:
        return all(json_is_plain(item) for item in value)
    return kind is str or kind is int or value is None or kind is bool


def _canonical_bytes_fast(row: Mapping[str, Any]) -> bytes | None:
    """The same bytes as the general path for the rows the signer writes, several times faster: one orjson
    call instead of a Python walk over every column. None where the general path is needed."""
    return _fast_document(dict(zip(HASHED_COLUMNS, _hashed_values(row), strict=True)), typed=False)


def canonical_bytes_in_column_order(row: asyncpg.Record) -> bytes:
    """``canonical_bytes`` of a database row whose first columns are ``HASHED_COLUMNS`` in that order, each
    decoded from its SQL type (so a text column holds a str): what the verifier reads, with less work."""
    # The row goes on with columns that are not hashed: zip stops at the last hashed one.
    fast = _fast_document(dict(zip(HASHED_COLUMNS, row, strict=False)), typed=True)
    return fast if fast is not None else canonical_bytes(dict(zip(HASHED_COLUMNS, row, strict=False)))


_FAST_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER | orjson.OPT_UTC_Z


def _fast_document(
    document: dict[str, Any], *, typed: bool, json_columns: tuple[str, ...] = _JSON_COLUMNS
) -> bytes | None:
    """Serialises ``document`` (the hashed columns, which it changes) if orjson gives the canonical bytes."""
    for column in _TIMESTAMP_COLUMNS:
        value = document[column]
        if type(value) is not datetime or value.tzinfo is None:
            return None
        if value.tzinfo is not UTC or value.microsecond == 0:
            # orjson writes a UTC instant as the canonical text itself, but leaves out ".000000".
            document[column] = _utc_text(value) if column == "received_at" else format_timestamp(value)
    cost = document["cost"]
    if cost is not None:
        if type(cost) is not Decimal:
            return None
        document["cost"] = format_cost(cost)
    for column in json_columns:
        if not json_is_plain(document[column]):
            return None
    if not typed and not _SCALAR_TYPES.issuperset(map(type, _scalar_values(document))):
        return None
    try:
        return orjson.dumps(document, option=_FAST_OPTIONS)
    except orjson.JSONEncodeError:  # an integer beyond 2^53, which the general path writes as a string
        return None


_SCALAR_COLUMNS = tuple(
    column for column in HASHED_COLUMNS if column not in (*_TIMESTAMP_COLUMNS, *_JSON_COLUMNS, "cost")
)
_hashed_values = operator.itemgetter(*HASHED_COLUMNS)
_scalar_values = operator.itemgetter(*_SCALAR_COLUMNS)


# SHA-256 with each version's domain tag already absorbed: a copy and two updates cost less than joining the
# tag, the previous hash and the canonical bytes into one new buffer per row.
_ROW_HASH_PREFIXES = {version: hashlib.sha256(tag) for version, tag in DOMAIN_TAGS.items()}


def row_hash(prev_hash: bytes, canonical: bytes, version: int = HASH_VERSION_PLAIN) -> bytes:
    hasher = _ROW_HASH_PREFIXES[version].copy()
    hasher.update(prev_hash)
    hasher.update(canonical)
    return hasher.digest()


def canonical_content(content: Mapping[str, Any]) -> bytes:
    """JCS of a row's content object (field name -> text), as ``audit_content.content`` holds it."""
    if json_is_plain(content):
        return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return canonicalize(_normalise_json(content))


def content_digest(salt: bytes, content: Mapping[str, Any]) -> bytes:
    """SHA-256(salt || JCS(content)): what a version 2 row commits to instead of its content."""
    return hashlib.sha256(salt + canonical_content(content)).digest()


_JSON_COLUMNS_V2 = tuple(c for c in _JSON_COLUMNS if c != "content")


def canonical_bytes_v2(row: Mapping[str, Any], digest: bytes) -> bytes:
    """The hashed bytes of a version 2 row: every hashed column but ``content``, and ``content_digest``
    (lower-case hex of ``digest``). ``row`` may hold ``content`` and other columns: they are left out."""
    document = {column: row[column] for column in HASHED_COLUMNS if column != "content"}
    document["content_digest"] = digest.hex()
    fast = _fast_document(dict(document), typed=False, json_columns=_JSON_COLUMNS_V2)
    if fast is not None:
        return fast
    return canonicalize({column: _normalise(value) for column, value in document.items()})


def canonical_bytes_v2_in_column_order(row: asyncpg.Record, digest: bytes) -> bytes:
    """``canonical_bytes_v2`` of a database row whose first columns are ``HASHED_COLUMNS`` in that order, each
    decoded from its SQL type: what the verifier reads, without the per-column type checks."""
    document = dict(zip(HASHED_COLUMNS, row, strict=False))
    del document["content"]
    document["content_digest"] = digest.hex()
    fast = _fast_document(document, typed=True, json_columns=_JSON_COLUMNS_V2)
    return fast if fast is not None else canonical_bytes_v2(dict(zip(HASHED_COLUMNS, row, strict=False)), digest)


_EMPTY_OBJECT = b"{}"  # JCS of the empty object, which most rows' content is
_CONTENT_OPTIONS = orjson.OPT_SORT_KEYS


def plain_content_digest(salt: bytes, content: dict[str, Any]) -> bytes:
    """``content_digest`` of content already known to satisfy ``json_is_plain``."""
    if not content:
        return hashlib.sha256(salt + _EMPTY_OBJECT).digest()
    return hashlib.sha256(salt + orjson.dumps(content, option=_CONTENT_OPTIONS)).digest()


def canonical_bytes_v2_checked(values: dict[str, Any], digest: bytes) -> bytes | None:
    """``canonical_bytes_v2`` in one orjson call, for values checked as ``canonical_bytes_checked`` requires
    (``content`` among them, left out here). None where the general path must decide.

    ``values`` itself is serialised, with ``content`` swapped for ``content_digest`` and whole-second
    timestamps for their text meanwhile, and put back after (``content`` then last in the dict, the one
    difference): a copy of its ~40 entries per row cost more."""
    content = values.pop("content")
    values["content_digest"] = digest.hex()
    event_time, received_at = values["event_time"], values["received_at"]
    # orjson leaves out ".000000" on a whole second; the canonical form never does.
    if event_time.microsecond == 0:
        values["event_time"] = format_timestamp(event_time)
    if received_at.microsecond == 0:
        values["received_at"] = _utc_text(received_at)
    try:
        return _dumps_checked(values)
    finally:
        del values["content_digest"]
        values["content"] = content
        values["event_time"], values["received_at"] = event_time, received_at


class CheckedSerialisation(NamedTuple):
    """What ``plain_content_digest`` and ``canonical_bytes_v2_checked`` hand orjson, for a compiled copy of
    them (the signer's ``_native_chain.c``) to call the very same (it writes the text of a whole second in UTC
    itself, and is tested against these)."""

    option: int  # the canonical bytes' orjson options
    default: Callable[[Any], str]  # and their default=, which writes the cost
    content_option: int  # the content's orjson options
    event_time_text: Callable[[datetime], str]  # a whole-second event_time's canonical text
    received_at_text: Callable[[datetime], str]  # a whole-second received_at's canonical text


CHECKED_SERIALISATION = CheckedSerialisation(
    _CHECKED_OPTIONS, _decimal_text, _CONTENT_OPTIONS, format_timestamp, _utc_text
)


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


def domain_tag(version: object) -> bytes:
    """The domain tag of a hash version; version 1's for anything unknown (the hash then fails to match)."""
    return DOMAIN_TAGS.get(version, DOMAIN_TAG) if isinstance(version, int) else DOMAIN_TAG


def stored_canonical_bytes(row: Mapping[str, Any]) -> bytes:
    """The hashed bytes of a stored row of either version (a version 2 row must carry ``content_digest``)."""
    if row["hash_version"] == HASH_VERSION_ERASABLE:
        return canonical_bytes_v2(row, bytes(row["content_digest"]))
    return canonical_bytes(row)
