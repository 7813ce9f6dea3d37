from __future__ import annotations

import pytest

from shared.pii import PiiEngine
from shared.pii.checksums import iban_valid
from tests.unit.pii.conftest import found

POSITIVES = [
    ("pay to DE89 3704 0044 0532 0130 00 please", "DE89 3704 0044 0532 0130 00"),
    ("GB29NWBK60161331926819", "GB29NWBK60161331926819"),
    ("IBAN: FR1420041010050500013M02606.", "FR1420041010050500013M02606"),
    ("NL91ABNA0417164300", "NL91ABNA0417164300"),
    ("rekening NO9386011117947", "NO9386011117947"),
]
NEGATIVES = [
    "DE89 3704 0044 0532 0130 01",  # check digits do not match
    "XX89370400440532013000",  # no such country
    "GB29NWBK6016133192681",  # one character short
    "GB29NWBK601613319268190",  # one character too many
    "ISBN DE12345 and HTTP2 and AB12",
    "sha XDE89370400440532013000",  # glued to a word
]


@pytest.mark.parametrize(("text", "iban"), POSITIVES)
def test_iban_is_found(engine: PiiEngine, text: str, iban: str) -> None:
    assert ("IBAN", iban) in found(engine, text)


@pytest.mark.parametrize("text", NEGATIVES)
def test_not_an_iban(engine: PiiEngine, text: str) -> None:
    assert all(kind != "IBAN" for kind, _ in found(engine, text))


def test_mod97() -> None:
    assert iban_valid("DE89370400440532013000")
    assert not iban_valid("DE88370400440532013000")
    assert not iban_valid("DE89-370400440532013000")
