from __future__ import annotations

import pytest

from shared.pii import PiiEngine
from shared.pii.checksums import luhn_valid
from tests.unit.pii.conftest import found

POSITIVES = [
    ("card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111"),
    ("4111-1111-1111-1111", "4111-1111-1111-1111"),
    ("mastercard 5500005555555559", "5500005555555559"),
    ("amex 378282246310005", "378282246310005"),
    ("amex 3782 822463 10005", "3782 822463 10005"),
    ("discover 6011111111111117", "6011111111111117"),
    ("jcb 3530111333300000", "3530111333300000"),
    ("paid with card 501234567896", "501234567896"),  # 12-digit Maestro, only with a card word
]
# Order numbers and ids of card length fail Luhn or have no issuer prefix.
NEGATIVES = [
    "order 4111 1111 1111 1112",
    "order number 1234567812345678",
    "ratio 0.4111111111111111",
    "ref 4111111111111111-2",
    "id 1234 5678 9012 3456",
    "invoice 501234567896",  # Maestro-shaped but 12 digits and no card word
    "epoch ns 1732812345000000",
    "account 0000000000000000",
]


@pytest.mark.parametrize(("text", "card"), POSITIVES)
def test_card_is_found(engine: PiiEngine, text: str, card: str) -> None:
    assert ("CARD", card) in found(engine, text)


@pytest.mark.parametrize("text", NEGATIVES)
def test_not_a_card(engine: PiiEngine, text: str) -> None:
    assert all(kind != "CARD" for kind, _ in found(engine, text))


@pytest.mark.parametrize(
    ("digits", "valid"), [("4111111111111111", True), ("4111111111111112", False), ("79927398713", True), ("0", True)]
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid
