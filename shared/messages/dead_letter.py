"""The dead letter: a message that failed permanently, kept with the context of the failure.

Topic ``TOPIC_DEAD_LETTER``; key and value = the failed message's own; headers = the ``dlq.*`` context
below, then the failed message's original headers (its ``auth.*`` headers included, so a requeued message
is verified again exactly as it was first: what was authenticated still is, and nothing is authenticated
by being requeued). The reason in ``dlq.error`` names what failed, never payload text.

Anyone who can write the topic can put anything in it, so ``decode`` checks every context header; the
operator tools list such a dead letter as unreadable and never requeue it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.messages.errors import InvalidMessage
from shared.messages.raw_batch import MAX_RECEIVED_AT_NS, header_map

Headers = list[tuple[str, bytes]]

PREFIX = "dlq."
SOURCE_TOPIC = "dlq.source_topic"
SOURCE_PARTITION = "dlq.source_partition"
SOURCE_OFFSET = "dlq.source_offset"
STAGE = "dlq.stage"
ERROR = "dlq.error"
FAILED_AT = "dlq.failed_at"
MAX_ERROR_CHARS = 1000
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")  # Kafka's own rule for topic names
_STAGE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_DIGITS = re.compile(r"0|[1-9][0-9]{0,18}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_headers(source_topic: str, partition: int, offset: int, error: str, stage: str,
                   original: Sequence[tuple[str, bytes]] | None) -> Headers:
    headers: Headers = [
        (SOURCE_TOPIC, source_topic.encode()),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
        (STAGE, stage.encode()),
        (ERROR, error[:MAX_ERROR_CHARS].encode()),
        (FAILED_AT, str(time.time_ns()).encode()),
    ]
    return headers + [(k, v) for k, v in (original or []) if not k.startswith(PREFIX)]


@dataclass(frozen=True)
class DeadLetterContext:
    source_topic: str
    source_partition: int
    source_offset: int
    stage: str
    error: str
    failed_at: datetime | None
    original_headers: tuple[tuple[str, bytes], ...]


def _required(named: dict[str, bytes], name: str, pattern: re.Pattern[str]) -> str:
    raw = named.get(name)
    if raw is None:
        raise InvalidMessage(f"dead letter has no {name} header")
    text = raw.decode("ascii", "replace") if len(raw) <= 256 else ""
    if pattern.fullmatch(text) is None:
        raise InvalidMessage(f"dead letter header {name} is malformed")
    return text


def decode(headers: object) -> DeadLetterContext:
    """The context of a dead letter. Only the ``dlq.*`` headers are checked: the original headers are the
    failed message's, kept as they came (they may be why it failed), to be checked again if it is requeued."""
    if not isinstance(headers, list | tuple):
        raise InvalidMessage("headers are not a list of pairs")
    pairs = [pair for pair in headers if isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)]
    named = header_map([pair for pair in pairs if pair[0].startswith(PREFIX)])
    partition = int(_required(named, SOURCE_PARTITION, _DIGITS))
    if partition >= 2**31:
        raise InvalidMessage(f"dead letter header {SOURCE_PARTITION} is out of range")
    failed_at: datetime | None = None
    if FAILED_AT in named:
        nanos = int(_required(named, FAILED_AT, _DIGITS))
        if nanos > MAX_RECEIVED_AT_NS:
            raise InvalidMessage(f"dead letter header {FAILED_AT} is out of range")
        failed_at = _EPOCH + timedelta(microseconds=nanos // 1000)
    error = named.get(ERROR, b"")
    return DeadLetterContext(
        _required(named, SOURCE_TOPIC, _TOPIC),
        partition,
        int(_required(named, SOURCE_OFFSET, _DIGITS)),
        _required(named, STAGE, _STAGE),
        error[: MAX_ERROR_CHARS * 4].decode("utf-8", "replace")[:MAX_ERROR_CHARS],
        failed_at,
        tuple((k, v) for k, v in pairs if not k.startswith(PREFIX) and isinstance(v, bytes)),
    )
