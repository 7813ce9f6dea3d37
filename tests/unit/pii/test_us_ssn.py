from __future__ import annotations

import pytest

from shared.pii import PiiEngine
from shared.pii.recognizers.us_ssn import is_valid_ssn
from tests.unit.pii.conftest import found

POSITIVES = [
    ("my SSN is 078-05-1120", "078-05-1120", None),
    ("ssn: 078051120", "078051120", None),
    ("Social Security No. 219 09 9999", "219 09 9999", None),
    ("078051120", "078051120", "customer_ssn"),  # a JSON value under an "ssn" key
]
NEGATIVES = [
    "000-12-3456",  # area 000
    "666-12-3456",  # area 666
    "900-12-3456",  # areas 900-999
    "123-00-4567",  # group 00
    "123-45-0000",  # serial 0000
    "id 078051120",  # nine bare digits without the word
    "123-45-67890",  # a longer number
    "call 415-555-0134",
    "2026-11-28",
]


@pytest.mark.parametrize(("text", "ssn", "key"), POSITIVES)
def test_ssn_is_found(engine: PiiEngine, text: str, ssn: str, key: str | None) -> None:
    assert ("US_SSN", ssn) in found(engine, text, key)


@pytest.mark.parametrize("text", NEGATIVES)
def test_not_an_ssn(engine: PiiEngine, text: str) -> None:
    assert all(kind != "US_SSN" for kind, _ in found(engine, text))


def test_bare_digits_need_the_word_right_next_to_them(engine: PiiEngine) -> None:
    text = "ssn 078051120 is the old one; the order 219099999 shipped yesterday"
    assert [value for kind, value in found(engine, text) if kind == "US_SSN"] == ["078051120"]


@pytest.mark.parametrize(
    ("area", "group", "serial", "valid"),
    [("078", "05", "1120", True), ("000", "05", "1120", False), ("666", "05", "1120", False),
     ("987", "65", "4321", False), ("078", "00", "1120", False), ("078", "05", "0000", False)],
)
def test_ssa_rules(area: str, group: str, serial: str, valid: bool) -> None:
    assert is_valid_ssn(area, group, serial) is valid
