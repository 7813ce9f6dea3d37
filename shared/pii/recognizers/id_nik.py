"""Indonesian NIK (Nomor Induk Kependudukan), the 16-digit population number on the KTP.

Layout: PP KK CC DDMMYY SSSS -- province, regency/city, district, date of birth (day + 40 for women),
serial. A candidate must have a real province code, a regency or city code in the ranges Dukcapil uses,
a real calendar date and a non-zero serial; about one random 16-digit number in seventy passes.

Always masked whatever a tenant's posture says, and always partially (``31**********0001``) so the
region stays readable. A 16-digit number can also be a payment card: it is one when it passes as a card
and a card word ("card", "visa", "kartu") is near and no NIK word is, or when it is written in the card
style of four groups of four.
"""

from __future__ import annotations

from collections.abc import Iterator

from shared.pii.context import CONTEXT_WORDS
from shared.pii.recognizers.base import Finding, TextScan, joined_to_word, partial_mask
from shared.pii.recognizers.card import CARD_CONTEXT, is_card_number

NIK_CONTEXT = CONTEXT_WORDS.define(
    "ID_NIK",
    [
        "nik", "no nik", "nomor nik", "ktp", "e-ktp", "ektp", "no ktp", "nomor ktp", "kartu tanda penduduk",
        "nomor induk kependudukan", "induk kependudukan", "kependudukan", "identity number", "id number",
        "national id", "kk", "kartu keluarga",
    ],
)

# Kemendagri province codes, including the four Papua provinces created in 2022 (93-96).
PROVINCE_CODES = frozenset(
    {
        11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 31, 32, 33, 34, 35, 36, 51, 52, 53,
        61, 62, 63, 64, 65, 71, 72, 73, 74, 75, 76, 81, 82, 91, 92, 93, 94, 95, 96,
    }
)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Written as one block, or grouped like the KTP prints it (6-6-4) or in province/regency/district parts;
# keyed by the size of the first group, so most digit groups are passed over at a glance.
_GROUPINGS_BY_FIRST_SIZE: dict[int, tuple[tuple[int, ...], ...]] = {
    16: ((16,),),
    6: ((6, 6, 4),),
    2: ((2, 2, 2, 6, 4),),
    4: ((4, 4, 4, 4),),
}
_SEPARATORS = frozenset({" ", ".", "-"})


def is_valid_nik(digits: str) -> bool:
    if len(digits) != 16 or not digits.isdigit():
        return False
    if int(digits[0:2]) not in PROVINCE_CODES:
        return False
    regency = int(digits[2:4])
    # Regencies are numbered from 01 (no province has more than about 40), cities from 71.
    if not (1 <= regency <= 49 or 71 <= regency <= 79) or digits[4:6] == "00":
        return False
    day, month = int(digits[6:8]), int(digits[8:10])
    if day > 40:
        day -= 40
    if not 1 <= month <= 12 or not 1 <= day <= _DAYS_IN_MONTH[month - 1]:
        return False
    return digits[12:16] != "0000"


def grouped_candidates(text: str, groups: list[tuple[int, int]]) -> Iterator[tuple[int, int, str, tuple[int, ...]]]:
    """Every (start, end, digits, grouping) of 16 digits in a run, written in one of the known groupings."""
    sizes = [end - start for start, end in groups]
    for first, size in enumerate(sizes):
        for grouping in _GROUPINGS_BY_FIRST_SIZE.get(size, ()):
            last = first + len(grouping) - 1
            if last >= len(groups) or tuple(sizes[first:last + 1]) != grouping:
                continue
            separators = {text[groups[i][1]:groups[i + 1][0]] for i in range(first, last)}
            if len(separators) > 1 or not separators <= _SEPARATORS:
                continue
            digits = "".join(text[start:end] for start, end in groups[first:last + 1])
            yield groups[first][0], groups[last][1], digits, grouping


def in_number_boundaries(text: str, start: int, end: int) -> bool:
    """Not glued to a word and not one part of a longer dotted or dashed number."""
    if joined_to_word(text, start, end):
        return False
    if start >= 2 and text[start - 1] in ".-" and text[start - 2].isdigit():
        return False
    return not (end + 1 < len(text) and text[end] in ".-" and text[end + 1].isdigit())


class IdNikRecognizer:
    kind = "ID_NIK"
    placeholder = "<ID_NIK>"
    priority = 76

    def may_contain(self, scan: TextScan) -> bool:
        return bool(scan.runs_with_digits(16))

    def find(self, scan: TextScan) -> Iterator[Finding]:
        text = scan.text
        for run in scan.runs_with_digits(16):
            for start, end, digits, grouping in grouped_candidates(text, run.groups(text)):
                if not is_valid_nik(digits) or not in_number_boundaries(text, start, end):
                    continue
                if is_card_number(digits) and self._reads_as_card(scan, start, end, grouping):
                    continue
                yield Finding(start, end, self.kind, self.priority)

    @staticmethod
    def _reads_as_card(scan: TextScan, start: int, end: int, grouping: tuple[int, ...]) -> bool:
        closest = scan.closest_context((NIK_CONTEXT, CARD_CONTEXT), start, end)
        if closest is not None:
            return closest == CARD_CONTEXT
        return grouping == (4, 4, 4, 4)

    def mask(self, value: str) -> str:
        return partial_mask(value)
