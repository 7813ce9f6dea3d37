"""The raw batch: one OTLP export request (or a piece of one) as the receiver enqueued it.

Topics ``TOPIC_RAW_LOGS`` and ``TOPIC_RAW_METRICS``; key = tenant; value = the OTLP body (protobuf or JSON,
decompressed); headers below. Tenancy comes from the verified licence, never from the telemetry, and the
receiver authenticates every batch (``shared.messages.auth``, domain ``raw-batch/v1/<kind>``) over all the
headers below and the payload, so a writer without its key cannot put a batch into a tenant's chain.

Replays and requeues send the message again byte for byte with its original headers, adding only
provenance headers (``replay.*``, ``requeue.*``) that the MAC does not cover and no worker acts on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from shared import otlp
from shared.messages.auth import KEY_ID_HEADER, MAC_HEADER, AuthenticationFailed, Keyring, MessageKey
from shared.messages.errors import InvalidMessage, quoted

Kind = Literal["logs", "metrics"]
Headers = list[tuple[str, bytes]]

TENANT = "tenant"
ORG = "org"
LICENSE_ID = "license_id"
CONTENT_TYPE = "content_type"
RECEIVED_AT = "received_at"
REQUEST_ID = "request_id"
RECORD_COUNT = "record_count"
CHUNK = "chunk"
FIELDS = (TENANT, ORG, LICENSE_ID, CONTENT_TYPE, RECEIVED_AT, REQUEST_ID, RECORD_COUNT, CHUNK)
# Headers that operator tools add and nothing acts on; everything else not named here is refused.
PROVENANCE_PREFIXES = ("replay.", "requeue.")
MAX_HEADERS = 32
MAX_HEADER_BYTES = 256
MAX_RECORD_COUNT = 10_000_000
MAX_CHUNKS = 1_000_000
# 9999-12-31T23:59:59.999999999Z: a received_at beyond cannot be a datetime.
MAX_RECEIVED_AT_NS = 253_402_300_800 * 10**9 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")  # tenant and org ids, as licences have them
_LICENSE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DIGITS = re.compile(r"0|[1-9][0-9]{0,20}")  # 21 digits: up to past MAX_RECEIVED_AT_NS
_CHUNK = re.compile(r"([1-9][0-9]{0,6})/([1-9][0-9]{0,6})")


@dataclass(frozen=True)
class RawBatch:
    tenant: str
    org: str
    license_id: str
    content_type: str
    received_at_ns: int
    request_id: str
    record_count: int
    chunk_index: int
    chunk_total: int
    payload: bytes

    @property
    def encoding(self) -> otlp.Encoding:
        encoding = otlp.media_type(self.content_type)
        assert encoding is not None  # checked when decoded or built
        return encoding

    @property
    def received_at(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.received_at_ns // 1000)


def _domain(kind: Kind) -> bytes:
    return b"raw-batch/v1/" + kind.encode()


def _header_values(batch: RawBatch) -> list[bytes]:
    return [batch.tenant.encode(), batch.org.encode(), batch.license_id.encode(), batch.content_type.encode(),
            str(batch.received_at_ns).encode(), batch.request_id.encode(), str(batch.record_count).encode(),
            f"{batch.chunk_index}/{batch.chunk_total}".encode()]


def encode(batch: RawBatch, key: MessageKey, kind: Kind) -> Headers:
    """The headers of one raw batch, authenticated with ``key`` over them and the payload."""
    values = _header_values(batch)
    return [*zip(FIELDS, values, strict=True), *key.headers(_domain(kind), [*values, batch.payload])]


def header_map(headers: object) -> dict[str, bytes]:
    """Headers as a dict; refuses what is not a short list of (name, bytes) pairs or names a header twice."""
    if headers is None:
        return {}
    # The list or tuple a Kafka client hands over needs no abstract-class check, the slow part of this.
    if not isinstance(headers, (list, tuple)) and (
        not isinstance(headers, Sequence) or isinstance(headers, str | bytes)
    ):
        raise InvalidMessage("headers are not a list of pairs")
    if len(headers) > MAX_HEADERS:
        raise InvalidMessage(f"message has {len(headers)} headers (at most {MAX_HEADERS})")
    result: dict[str, bytes] = {}
    for pair in headers:
        if not isinstance(pair, tuple) or len(pair) != 2 or not isinstance(pair[0], str):
            raise InvalidMessage("a header is not a (name, value) pair")
        name, value = pair
        if value is None:
            value = b""
        if not isinstance(value, bytes):
            raise InvalidMessage(f"header {quoted(name)} has no byte value")
        if name in result:
            raise InvalidMessage(f"header {quoted(name)} appears twice")
        result[name] = value
    return result


def _text(headers: dict[str, bytes], name: str, pattern: re.Pattern[str]) -> str:
    raw = headers.get(name)
    if raw is None:
        raise InvalidMessage(f"raw batch has no {name} header; only the receiver may write this topic")
    if len(raw) > MAX_HEADER_BYTES:
        raise InvalidMessage(f"header {name} is longer than {MAX_HEADER_BYTES} bytes")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidMessage(f"header {name} is not ASCII") from None
    if pattern.fullmatch(text) is None:
        raise InvalidMessage(f"header {name} is malformed")
    return text


def decode(value: object, headers: object, keyring: Keyring, kind: Kind) -> RawBatch:
    """The batch, once every header is well formed and the MAC holds; ``InvalidMessage`` otherwise."""
    named = header_map(headers)
    for name in named:
        if name not in FIELDS and name not in (KEY_ID_HEADER, MAC_HEADER) and not name.startswith(PROVENANCE_PREFIXES):
            raise InvalidMessage(f"raw batch has an unexpected header {quoted(name)}")
    if value is None:
        value = b""
    if not isinstance(value, bytes):
        raise InvalidMessage("raw batch value is not bytes")
    tenant = _text(named, TENANT, _IDENTIFIER)
    org = _text(named, ORG, _IDENTIFIER)
    license_id = _text(named, LICENSE_ID, _LICENSE_ID)
    content_type_raw = named.get(CONTENT_TYPE, b"")
    content_type = content_type_raw.decode("ascii", "replace") if len(content_type_raw) <= MAX_HEADER_BYTES else ""
    if otlp.media_type(content_type) is None:
        raise InvalidMessage("raw batch has no known content_type header")
    received_at_ns = int(_text(named, RECEIVED_AT, _DIGITS))
    if received_at_ns > MAX_RECEIVED_AT_NS:
        raise InvalidMessage("header received_at is out of range")
    request_id = _text(named, REQUEST_ID, _REQUEST_ID)
    record_count = int(_text(named, RECORD_COUNT, _DIGITS))
    if record_count > MAX_RECORD_COUNT:
        raise InvalidMessage("header record_count is out of range")
    chunk = _CHUNK.fullmatch(_text(named, CHUNK, _CHUNK))
    assert chunk is not None
    chunk_index, chunk_total = int(chunk[1]), int(chunk[2])
    if chunk_index > chunk_total:
        raise InvalidMessage("header chunk is out of range")
    key_id = named.get(KEY_ID_HEADER)
    mac = named.get(MAC_HEADER)
    try:
        keyring.verify(
            None if key_id is None else key_id.decode("ascii", "replace"),
            None if mac is None else mac.decode("ascii", "replace"),
            _domain(kind),
            [*(named[name] for name in FIELDS), value],
        )
    except AuthenticationFailed as exc:
        raise InvalidMessage(f"raw {kind} batch: {exc}") from None
    return RawBatch(tenant, org, license_id, content_type, received_at_ns, request_id, record_count, chunk_index,
                    chunk_total, value)
