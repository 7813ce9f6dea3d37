"""`auditctl erase` refuses an unclear selection before touching the database or the broker."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from services.auditctl.cli import main
from services.auditctl.erase import Selector


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reason", "x"], "nothing selected"),
        (["--user", "u1", "--reason", "x"], "need --tenant"),
        (["--event", "e1", "--user", "u1", "--reason", "x"], "give --event alone"),
        (["--event", "e1", "--reason", "  "], "give a reason"),
        (["--tenant", "t1", "--since", "yesterday", "--reason", "x"], "not an ISO 8601 timestamp"),
    ],
)
def test_unclear_selections_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["erase", *args], env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"})
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_selector_describes_only_what_was_given() -> None:
    assert Selector(tenant="t1", session="s1").describe() == {"tenant": "t1", "session": "s1"}
    assert Selector(event_ids=("a", "b")).describe() == {"event_ids": "a,b"}
