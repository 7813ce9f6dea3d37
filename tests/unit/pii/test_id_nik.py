from __future__ import annotations

import pytest

from shared.pii import PiiEngine, build_engine
from shared.pii.recognizers.id_nik import is_valid_nik
from tests.unit.pii.conftest import found

# 31 74 01 230485 0001: DKI Jakarta, Jakarta Selatan, district 01, born 23-04-85, serial 0001.
POSITIVES = [
    ("NIK: 3174012304850001", "3174012304850001"),
    ("nik 3174016304850001", "3174016304850001"),  # a woman: day of birth + 40
    ("KTP 3174 0123 0485 0001", "3174 0123 0485 0001"),
    ("31.74.01.230485.0001", "31.74.01.230485.0001"),
    ("data 9501012304850001 papua", "9501012304850001"),  # Papua Pegunungan (2022)
]
NEGATIVES = [
    "9974012304850001",  # no province 99
    "3174013204850001",  # day 32
    "3174012313850001",  # month 13
    "3174013102850001",  # 31 February
    "3174012304850000",  # serial 0000
    "3174002304850001",  # district 00
    "3180012304850001",  # regency 80 is neither a regency nor a city number
    "epoch 1732812345000000",
    "id_3174012304850001",  # glued to an identifier
]


@pytest.mark.parametrize(("text", "nik"), POSITIVES)
def test_nik_is_found(engine: PiiEngine, text: str, nik: str) -> None:
    assert ("ID_NIK", nik) in found(engine, text)


@pytest.mark.parametrize("text", NEGATIVES)
def test_not_a_nik(engine: PiiEngine, text: str) -> None:
    assert all(kind != "ID_NIK" for kind, _ in found(engine, text))


def test_nik_validation() -> None:
    assert is_valid_nik("3174012304850001")
    assert not is_valid_nik("317401230485000")
    assert not is_valid_nik("31740123048500a1")


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("NIK 3174012304850001", "NIK 31**********0001"),
        ("NIK 31.74.01.230485.0001", "NIK 31.**.**.******.0001"),
        ("KTP 3174 0123 0485 0001.", "KTP 31** **** **** 0001."),
    ],
)
def test_nik_is_partially_masked_and_keeps_its_separators(engine: PiiEngine, text: str, masked: str) -> None:
    result = engine.redact_text(text)
    assert result.text == masked
    assert result.counts == {"ID_NIK": 1}


# 5371012305850005 is a valid NIK (NTT) and a Luhn-valid Mastercard number: the nearest word decides.
@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("NIK 5371012305850005", "ID_NIK"),
        ("kartu kredit 5371012305850005", "CARD"),
        ("visa/mastercard 5371012305850005, NIK pemilik di bawah", "CARD"),
        ("5371012305850005", "ID_NIK"),  # no word: the identity number, which is always masked
        ("5371 0123 0585 0005", "CARD"),  # written the way cards are printed
    ],
)
def test_a_number_that_is_both_nik_and_card(engine: PiiEngine, text: str, kind: str) -> None:
    assert [k for k, _ in found(engine, text)] == [kind]


def test_nik_is_masked_whatever_the_posture() -> None:
    engine = build_engine(["EMAIL"])
    assert {"ID_NIK", "ID_NPWP"} <= engine.kinds
    assert engine.redact_text("NIK 3174012304850001, a@example.com").text == "NIK 31**********0001, <EMAIL>"
    assert build_engine([]).redact_text("3174012304850001").text == "31**********0001"
