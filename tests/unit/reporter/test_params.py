"""Query parameters: strict parsing, opaque cursors, whole-day usage windows."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.reporter import params
from services.reporter.params import BadRequest, Cursor

NOW = datetime(2026, 11, 28, 17, 5, tzinfo=UTC)


def test_cursors_round_trip_and_refuse_anything_else() -> None:
    feed = Cursor(NOW, 42)
    assert Cursor.decode(feed.encode(), int) == feed
    session = Cursor(NOW, "session-1")
    assert Cursor.decode(session.encode(), str) == session
    for bad in ("", "not-base64!", "W10", feed.encode()[:-3], "x" * 600):
        with pytest.raises(BadRequest):
            Cursor.decode(bad, int)
    with pytest.raises(BadRequest, match="cursor"):
        Cursor.decode(feed.encode(), str)  # a feed cursor is not a session-list cursor


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28", datetime(2026, 11, 28, tzinfo=UTC)),
        ("2026-11-28T10:00:00Z", datetime(2026, 11, 28, 10, tzinfo=UTC)),
        ("2026-11-28T10:00:00", datetime(2026, 11, 28, 10, tzinfo=UTC)),
        ("2026-11-28T11:00:00 01:00", datetime(2026, 11, 28, 10, tzinfo=UTC)),  # "+01:00" unencoded in a URL
    ],
)
def test_times(text: str, expected: datetime) -> None:
    assert params.parse_time(text, "since") == expected


def test_bad_values_name_the_parameter() -> None:
    with pytest.raises(BadRequest, match=r"^since"):
        params.time_range({"since": "last tuesday"})
    with pytest.raises(BadRequest, match=r"^since: must be before until"):
        params.time_range({"since": "2026-11-02", "until": "2026-11-01"})
    with pytest.raises(BadRequest, match=r"^limit"):
        params.page_size({"limit": "0"}, 50, 500)
    with pytest.raises(BadRequest, match=r"^limit"):
        params.page_size({"limit": "501"}, 50, 500)
    with pytest.raises(BadRequest, match=r"^offset"):
        params.offset({"offset": "-1"})
    with pytest.raises(BadRequest, match=r"^group_by"):
        params.choice({"group_by": "team"}, "group_by", ("user", "model", "day"), "user")
    with pytest.raises(BadRequest, match=r"^plane"):
        params.text({"plane": "x" * 513}, "plane")
    assert params.page_size({}, 50, 500) == 50 and params.offset({}) == 0


def test_usage_windows_are_whole_utc_days() -> None:
    default = params.day_window({}, NOW, 30, 400)
    assert (default.first_day, default.end_day) == (date(2026, 10, 30), date(2026, 11, 29))  # today included
    rounded = params.day_window({"since": "2026-11-01T13:00:00Z", "until": "2026-11-03T00:00:01Z"}, NOW, 30, 400)
    assert (rounded.first_day, rounded.end_day) == (date(2026, 11, 1), date(2026, 11, 4))
    exact = params.day_window({"since": "2026-11-01", "until": "2026-11-03"}, NOW, 30, 400)
    assert (exact.since, exact.until) == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC))
    with pytest.raises(BadRequest, match="at most 400 days"):
        params.day_window({"since": "2020-01-01"}, NOW, 30, 400)
