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
    # Written forms of every listed country, national and international, whether or not the range is assigned.
    ("Sydney (02) 9876 5432", "(02) 9876 5432"),
    ("mobile 0412 345 678", "0412 345 678"),
    ("ring +61 4 1234 5678", "+61 4 1234 5678"),
    ("+61.437.406.812", "+61.437.406.812"),
    ("ligue (11) 91234-5678", "(11) 91234-5678"),
    ("tel 12 3915-0008", "12 3915-0008"),
    ("+55 61 9141-7776", "+55 61 9141-7776"),
    ("+65 6123 4567", "+65 6123 4567"),
    ("call 9123 4567", "9123 4567"),
    ("+44(0)115 4960914", "+44(0)115 4960914"),
    ("+34 948 812 415", "+34 948 812 415"),
    ("+31(0)20-4497869", "+31(0)20-4497869"),
    ("+62 (021) 669-0743", "+62 (021) 669-0743"),
    ("(591)341-7776", "(591)341-7776"),
    ("Telefon +49 (0) 30 12345678", "+49 (0) 30 12345678"),
    ("call me at 9876543210", "9876543210"),
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
