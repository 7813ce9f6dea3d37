"""An operator's window (a time range or explicit offsets) resolved to exact offset ranges per partition.

Time windows use the broker's offsets-for-times, whose contract (Apache Kafka) is: the earliest offset whose
timestamp is at or after the target; or no answer when there is none. Each answer is checked against that
contract by reading at most two messages (the one answered must be at or after the target, the one before
it before the target; for "none", the last message must be before the target). An answer that fails the
check (other Kafka-protocol brokers answer offset 0 for any target, or for an empty partition) is not
used: the offset is then found by a binary search that reads one message per step.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.auditctl.ops.reader import OffsetSource, Record, TimestampAnswer


@dataclass(frozen=True)
class TimeWindow:
    """Messages the broker timestamped in ``[start, end)``; ``end`` None means up to now."""

    start: datetime
    end: datetime | None = None


@dataclass(frozen=True)
class OffsetWindow:
    """Explicit ranges: ``{partition: (start, end)}``, end exclusive, None meaning the current end."""

    ranges: dict[int, tuple[int, int | None]]


Window = TimeWindow | OffsetWindow


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    start: int
    end: int  # exclusive, fixed when the plan is made

    @property
    def messages(self) -> int:
        return max(0, self.end - self.start)


@dataclass(frozen=True)
class ResolvedWindow:
    topic: str
    ranges: tuple[PartitionRange, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def messages(self) -> int:
        return sum(r.messages for r in self.ranges)


_OFFSET_RANGE = re.compile(r"^(?P<partition>\d+):(?P<start>\d+)-(?P<end>\d*)$")


def parse_offset_ranges(specs: Iterable[str]) -> OffsetWindow:
    """``["0:100-200", "3:50-"]``: partition 0 offsets 100..199, partition 3 from 50 to the current end."""
    ranges: dict[int, tuple[int, int | None]] = {}
    for spec in specs:
        match = _OFFSET_RANGE.match(spec.strip())
        if match is None:
            raise ValueError(f"{spec!r} is not PARTITION:START-END (END exclusive, may be empty)")
        partition, start = int(match["partition"]), int(match["start"])
        end = int(match["end"]) if match["end"] else None
        if end is not None and end < start:
            raise ValueError(f"{spec!r}: end {end} is before start {start}")
        if partition in ranges:
            raise ValueError(f"partition {partition} is given twice")
        ranges[partition] = (start, end)
    if not ranges:
        raise ValueError("no offset range given")
    return OffsetWindow(ranges)


def parse_timestamp(text: str) -> datetime:
    """ISO 8601 (``2026-03-01T10:00:00Z``; without a zone it is UTC) or Unix epoch milliseconds."""
    value = text.strip()
    if value.isdigit():
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither ISO 8601 nor epoch milliseconds") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def to_millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def first_offset_at_or_after(source: OffsetSource, topic: str, partition: int, ts_ms: int,
                                   begin: int, end: int, answer: TimestampAnswer | None) -> int:
    """The first offset in ``[begin, end]`` whose message is timestamped at or after ``ts_ms``."""
    if begin >= end:
        return end  # empty partition: whatever the broker said, there is nothing to read
    if await _holds(source, topic, partition, ts_ms, begin, end, answer):
        return end if answer is None else min(max(answer.offset, begin), end)
    return await _search(source, topic, partition, ts_ms, begin, end)


async def _holds(source: OffsetSource, topic: str, partition: int, ts_ms: int, begin: int, end: int,
                 answer: TimestampAnswer | None) -> bool:
    """Whether the answer is the earliest offset at or after the target, as Kafka's contract says."""
    if answer is None or answer.offset == end:  # "none at or after the target"
        last = await _message_at(source, topic, partition, end - 1, end)
        return last is None or last.timestamp_ms < ts_ms
    if answer.timestamp_ms < ts_ms or not begin <= answer.offset < end:
        return False
    found = await source.first_at_or_after(topic, partition, answer.offset, end)
    if found is None or found.timestamp_ms < ts_ms:
        return False
    if answer.offset == begin:
        return True
    before = await _message_at(source, topic, partition, answer.offset - 1, answer.offset)
    return before is None or before.timestamp_ms < ts_ms


async def _message_at(source: OffsetSource, topic: str, partition: int, offset: int, end: int) -> Record | None:
    """The message at exactly ``offset``, or None where there is a hole (compaction, transaction markers)."""
    found = await source.first_at_or_after(topic, partition, offset, end)
    return found if found is not None and found.offset == offset else None


async def _search(source: OffsetSource, topic: str, partition: int, ts_ms: int, begin: int, end: int) -> int:
    """Lower bound by timestamp, reading one message per step. Exact when timestamps do not decrease along
    the partition, which holds for broker append time and, to within clock skew, for producer time."""
    low, high = begin, end
    while low < high:
        middle = (low + high) // 2
        record = await source.first_at_or_after(topic, partition, middle, high)
        if record is None:
            high = middle
        elif record.timestamp_ms < ts_ms:
            low = record.offset + 1
        else:
            high = middle
    return low


async def resolve_window(source: OffsetSource, topic: str, window: Window) -> ResolvedWindow:
    partitions = await source.partitions(topic)
    notes: list[str] = []
    if isinstance(window, OffsetWindow):
        unknown = sorted(set(window.ranges) - set(partitions))
        if unknown:
            raise ValueError(f"topic {topic} has no partition {', '.join(map(str, unknown))}")
        bounds = await source.bounds(topic, window.ranges)
        ranges = []
        for partition, (start, wanted_end) in sorted(window.ranges.items()):
            begin, end = bounds[partition]
            stop = end if wanted_end is None else min(wanted_end, end)
            if start < begin:
                notes.append(f"partition {partition}: offsets {start}-{min(begin, stop)} are no longer retained;"
                             f" starting at {begin}")
            if wanted_end is not None and wanted_end > end:
                notes.append(f"partition {partition}: ends at {end}, before the requested {wanted_end}")
            ranges.append(PartitionRange(partition, min(max(start, begin), stop), stop))
        return ResolvedWindow(topic, tuple(ranges), tuple(notes))

    if window.end is not None and window.end <= window.start:
        raise ValueError("the window ends before it starts")
    bounds = await source.bounds(topic, partitions)
    start_ms = to_millis(window.start)
    start_answers = await source.offsets_for_time(topic, partitions, start_ms)
    end_answers = None
    if window.end is not None:
        end_answers = await source.offsets_for_time(topic, partitions, to_millis(window.end))
    ranges = []
    for partition in partitions:
        begin, end = bounds[partition]
        first = await first_offset_at_or_after(source, topic, partition, start_ms, begin, end,
                                               start_answers.get(partition))
        last = end
        if end_answers is not None and window.end is not None:
            last = await first_offset_at_or_after(source, topic, partition, to_millis(window.end), begin, end,
                                                  end_answers.get(partition))
        ranges.append(PartitionRange(partition, first, max(first, last)))
    return ResolvedWindow(topic, tuple(ranges), tuple(notes))
