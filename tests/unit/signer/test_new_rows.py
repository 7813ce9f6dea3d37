"""Which rows of a batch are chained: every event once, none already stored or being written, in batch order."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.signer.appender import _new_rows


def _rows(ids: list[str]) -> list[Any]:
    return [SimpleNamespace(event_id=event_id, position=index) for index, event_id in enumerate(ids)]


def _by_definition(rows: list[Any], excluded: list[set[str]]) -> list[Any]:
    seen = set().union(*excluded)
    fresh = []
    for row in rows:
        if row.event_id not in seen:
            seen.add(row.event_id)
            fresh.append(row)
    return fresh


@pytest.mark.parametrize(
    ("ids", "excluded", "kept"),
    [
        (["a", "b", "c"], [], ["a", "b", "c"]),
        (["a", "b", "c"], [set(), set(), set()], ["a", "b", "c"]),
        (["a", "b", "a", "c", "b"], [], ["a", "b", "c"]),  # the first of repeats, in order
        (["a", "b", "c"], [{"b"}], ["a", "c"]),  # already stored
        (["a", "b", "c"], [set(), {"a"}, {"c"}], ["b"]),  # in flight, and pending
        (["a", "b", "c"], [{"x", "y"}, {"z"}], ["a", "b", "c"]),
        (["a", "a"], [{"a"}], []),
        ([], [{"a"}], []),
    ],
)
def test_rows_kept(ids: list[str], excluded: list[set[str]], kept: list[str]) -> None:
    assert [row.event_id for row in _new_rows(_rows(ids), *excluded)] == kept


def test_the_usual_batch_keeps_its_rows_themselves() -> None:
    rows = _rows(["a", "b"])
    fresh = _new_rows(rows, {"x"}, frozenset({"y"}))
    assert fresh == rows and fresh is not rows
    assert all(kept is row for kept, row in zip(fresh, rows, strict=True))


_ids = st.lists(st.sampled_from("abcdefgh"), max_size=12)


@given(ids=_ids, excluded=st.lists(st.sets(st.sampled_from("abcdefghxyz")), max_size=3))
def test_same_as_the_definition(ids: list[str], excluded: list[set[str]]) -> None:
    rows = _rows(ids)
    assert _new_rows(rows, *excluded) == _by_definition(rows, excluded)
