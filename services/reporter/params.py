"""Query parameters, parsed strictly: a bad value is a 400 naming the parameter, never a silent default.

Keyset cursors are opaque to clients: base64url of a small JSON array holding the sort key of the last
row served. They carry no tenant: every query is bound to the caller's tenant, so a cursor copied from
another tenant's page can only ever select the caller's own rows.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

_MAX_VALUE_LENGTH = 512
_CURSOR_VERSION = 1
# Audit data starts in this century; the bounds leave room for date arithmetic (windows, rounding to days)
# that would overflow Python's datetime at year 1 or 9999.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)
INT64_MAX = 2**63 - 1


class BadRequest(Exception):
    """A parameter the client must fix; answered with 400 and this message."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


def text(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if len(value) > _MAX_VALUE_LENGTH:
        raise BadRequest(name, f"longer than {_MAX_VALUE_LENGTH} characters")
    return value


def choice(query: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = text(query, name) or default
    if value not in allowed:
        raise BadRequest(name, f"must be one of {', '.join(allowed)}")
    return value


def parse_time(value: str, name: str) -> datetime:
    """ISO 8601 date or date-time; a time without an offset is UTC."""
    candidate = value.strip()
    if "T" in candidate and " " in candidate:
        # A "+01:00" offset sent unencoded in a query string arrives as " 01:00".
        candidate = candidate.replace(" ", "+")
    try:
        if len(candidate) == 10:
            parsed = datetime.combine(date.fromisoformat(candidate), time(0), UTC)
        else:
            parsed = datetime.fromisoformat(candidate)
    except ValueError:
        raise BadRequest(name, "not an ISO 8601 date or date-time") from None
    moment = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    try:
        in_range = _EARLIEST <= moment <= _LATEST
    except OverflowError:  # an offset that moves the moment past year 1 or 9999
        in_range = False
    if not in_range:
        raise BadRequest(name, f"must be between {_EARLIEST.date()} and {_LATEST.date()}")
    return moment


def timestamp(query: Mapping[str, str], name: str) -> datetime | None:
    value = text(query, name)
    return None if value is None else parse_time(value, name)


def page_size(query: Mapping[str, str], default: int, maximum: int) -> int:
    value = text(query, "limit")
    if value is None:
        return default
    try:
        size = int(value)
    except ValueError:
        raise BadRequest("limit", "not an integer") from None
    if not 1 <= size <= maximum:
        raise BadRequest("limit", f"must be between 1 and {maximum}")
    return size


def offset(query: Mapping[str, str]) -> int:
    value = text(query, "offset")
    if value is None:
        return 0
    try:
        number = int(value)
    except ValueError:
        raise BadRequest("offset", "not an integer") from None
    if not 0 <= number <= 10_000_000:
        raise BadRequest("offset", "must be between 0 and 10,000,000")
    return number


def time_range(query: Mapping[str, str]) -> tuple[datetime | None, datetime | None]:
    since, until = timestamp(query, "since"), timestamp(query, "until")
    if since is not None and until is not None and since >= until:
        raise BadRequest("since", "must be before until")
    return since, until


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Cursor:
    """The sort key of the last row of a page: ``(time, tie-breaker)``, newest first."""

    at: datetime
    after: int | str

    def encode(self) -> str:
        return _b64(json.dumps([_CURSOR_VERSION, self.at.isoformat(), self.after], separators=(",", ":")).encode())

    @classmethod
    def decode(cls, token: str, tie_breaker: type[int] | type[str]) -> Cursor:
        if len(token) > _MAX_VALUE_LENGTH:
            raise BadRequest("cursor", "too long")
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            version, at, after = data
            if version != _CURSOR_VERSION or not isinstance(at, str) or type(after) is not tie_breaker:
                raise ValueError("shape")
            moment = datetime.fromisoformat(at)
            if isinstance(after, int) and not -INT64_MAX - 1 <= after <= INT64_MAX:
                raise ValueError("tie-breaker outside bigint")
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
            raise BadRequest("cursor", "not a cursor this endpoint issued") from None
        if moment.tzinfo is None:
            raise BadRequest("cursor", "not a cursor this endpoint issued")
        return cls(moment, after)


def cursor(query: Mapping[str, str], tie_breaker: type[int] | type[str]) -> Cursor | None:
    value = text(query, "cursor")
    return None if value is None else Cursor.decode(value, tie_breaker)


@dataclass(frozen=True)
class DayWindow:
    """A usage window in whole UTC days: ``[first_day, end_day)``."""

    first_day: date
    end_day: date

    @property
    def since(self) -> datetime:
        return datetime.combine(self.first_day, time(0), UTC)

    @property
    def until(self) -> datetime:
        return datetime.combine(self.end_day, time(0), UTC)


def day_window(query: Mapping[str, str], now: datetime, default_days: int, max_days: int) -> DayWindow:
    """Usage is kept per UTC day: ``since`` is rounded down and ``until`` up to whole days.

    Without parameters: the last ``default_days`` days, today included.
    """
    since, until = time_range(query)
    if until is None:
        end = now.astimezone(UTC).date() + timedelta(days=1)
    else:
        moment = until.astimezone(UTC)
        end = moment.date() + timedelta(days=0 if moment.time() == time(0) else 1)
    first = end - timedelta(days=default_days) if since is None else since.astimezone(UTC).date()
    if first >= end:
        raise BadRequest("since", "must be before until")
    if (end - first).days > max_days:
        raise BadRequest("since", f"a usage window may cover at most {max_days} days")
    return DayWindow(first, end)


def positive_int(query: Mapping[str, str], name: str, *, required: bool = False) -> int | None:
    """A whole number from 1 to 2**62 (a tree size, a sequence number)."""
    value = text(query, name)
    if value is None:
        if required:
            raise BadRequest(name, "required")
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(name, "not an integer") from None
    if not 1 <= number <= 2**62:
        raise BadRequest(name, "must be a positive integer")
    return number
