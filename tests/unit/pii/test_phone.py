from __future__ import annotations

import pytest

from shared.pii import PiiEngine
from tests.unit.pii.conftest import found

POSITIVES = [
    ("reach me at +1 415 555 0134", "+1 415 555 0134"),
    ("call (415) 555-0134 after six", "(415) 555-0134"),
    ("office 206.269.0743x9150", "206.269.0743x9150"),
    ("WA 0812-3456-7890", "0812-3456-7890"),
    ("nomor saya 081234567890 ya", "081234567890"),
    ("+62 812-3456-7890", "+62 812-3456-7890"),
    ("London +44 20 7946 0958", "+44 20 7946 0958"),
    ("Manchester (0161) 496 0066", "(0161) 496 0066"),
    ("Berlin 030 12345678", "030 12345678"),
    ("portable 06 12 34 56 78", "06 12 34 56 78"),
    ("call me at 4155550134", "4155550134"),
    ('--phone "0062 812 3456 7890"', "0062 812 3456 7890"),
]
# Timestamps, dates, counters, versions, amounts and addresses share the alphabet of phone numbers.
NEGATIVES = [
    "logged at 2026-11-28 16:11:51",
    "epoch ms 1732812345000",
    "took until 16:11:51.123",
    "epoch 1732812345",
    "limit 2147483647 reached",
    "release v1.2.3 and 2.1.332",
    "host 192.168.100.200",
    "Rp 4.742.718.000",
    "order ORD-4155550134",
    "ticket #29067045",
    "placeholder 0123456789",
    "due 11/28/2026",
    "28.11.2026",
    "NPWP 01.312.166.0-091.000",
    "build 20261128",
]


@pytest.mark.parametrize(("text", "phone"), POSITIVES)
def test_phone_is_found(engine: PiiEngine, text: str, phone: str) -> None:
    assert ("PHONE", phone) in found(engine, text)


@pytest.mark.parametrize("text", NEGATIVES)
def test_not_a_phone(engine: PiiEngine, text: str) -> None:
    assert all(kind != "PHONE" for kind, _ in found(engine, text))
