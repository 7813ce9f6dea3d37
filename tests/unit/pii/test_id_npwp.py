from __future__ import annotations

import pytest

from shared.pii import PiiEngine
from shared.pii.recognizers.id_npwp import is_valid_npwp15, is_valid_npwp16
from tests.unit.pii.conftest import found

# 01.312.166.0-091.000: the first nine digits 013121660 are a valid Luhn number.
POSITIVES = [
    ("NPWP 01.312.166.0-091.000", "01.312.166.0-091.000", None),
    ("01.312.166.0-091.000", "01.312.166.0-091.000", None),  # the printed form needs no word
    ("NPWP: 013121660091000", "013121660091000", None),
    ("Tax ID: 013121660091000", "013121660091000", None),
    ("npwp16 0013121660091000", "0013121660091000", None),  # 2024 form: "0" + the 15 digits
    ("NPWP pribadi 3174012304850001", "3174012304850001", None),  # a NIK used as NPWP
    ("013121660091000", "013121660091000", "npwp_perusahaan"),
]
NEGATIVES = [
    "01.312.166.1-091.000",  # wrong check digit
    "013121660091000",  # bare 15 digits without the word
    "00.000.000.0-000.000",  # serial 000000
    "NPWP 013121661091000",  # wrong check digit
    "format 99.999.999.9-999.999",
]


@pytest.mark.parametrize(("text", "npwp", "key"), POSITIVES)
def test_npwp_is_found(engine: PiiEngine, text: str, npwp: str, key: str | None) -> None:
    assert ("ID_NPWP", npwp) in found(engine, text, key)


@pytest.mark.parametrize("text", NEGATIVES)
def test_not_an_npwp(engine: PiiEngine, text: str) -> None:
    assert all(kind != "ID_NPWP" for kind, _ in found(engine, text))


def test_check_digit() -> None:
    assert is_valid_npwp15("013121660091000")
    assert is_valid_npwp15("021832415000000")  # 02.183.241.5-000.000
    assert not is_valid_npwp15("013121661091000")
    assert is_valid_npwp16("0013121660091000")
    assert not is_valid_npwp16("1013121660091000")


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("NPWP 01.312.166.0-091.000", "NPWP 01.***.***.*-**1.000"),
        ("NPWP 013121660091000", "NPWP 01*********1000"),
    ],
)
def test_npwp_is_partially_masked(engine: PiiEngine, text: str, masked: str) -> None:
    result = engine.redact_text(text)
    assert result.text == masked
    assert result.counts == {"ID_NPWP": 1}


def test_nik_and_npwp_side_by_side_keep_their_own_labels(engine: PiiEngine) -> None:
    text = "NIK: 3174012304850001, NPWP 01.312.166.0-091.000"
    assert [kind for kind, _ in found(engine, text)] == ["ID_NIK", "ID_NPWP"]
