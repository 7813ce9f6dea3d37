"""Indonesian NPWP (Nomor Pokok Wajib Pajak), the taxpayer number.

The classic form has 15 digits, ``TT.SSS.SSS.C-KKK.BBB``: taxpayer type, serial, a check digit, tax office,
branch. The check digit makes the first nine digits a valid Luhn number (the Luhn variant the DJP uses:
weights 1,2,1,2,... from the left over nine digits). Since 2024 the NPWP has 16 digits: a person's NIK,
or "0" followed by the 15-digit number.

The printed format is unmistakable and is taken on its own. Bare 15 or 16 digits are only an NPWP next to
an NPWP word ("NPWP", "wajib pajak", "tax id") or under such a JSON key; a NIK there is reported as an NPWP.
Always masked whatever a tenant's posture says, and partially, like the NIK.
"""

from __future__ import annotations

from collections.abc import Iterator

from shared.pii.checksums import luhn_valid
from shared.pii.context import CONTEXT_WORDS
from shared.pii.recognizers.base import Finding, TextScan, partial_mask
from shared.pii.recognizers.id_nik import NIK_CONTEXT, in_number_boundaries, is_valid_nik

NPWP_CONTEXT = CONTEXT_WORDS.define(
    "ID_NPWP",
    [
        "npwp", "no npwp", "nomor npwp", "npwp16", "nomor pokok wajib pajak", "wajib pajak", "pajak",
        "tax id", "tax number", "taxpayer", "taxpayer number", "tax identification number", "tin", "nitku",
    ],
)

_PRINTED_SIZES = (2, 3, 3, 1, 3, 3)
_PRINTED_SEPARATORS = (".", ".", ".", "-", ".")


def is_valid_npwp15(digits: str) -> bool:
    """15 digits whose first nine are a Luhn number and whose serial is not zero."""
    return len(digits) == 15 and digits.isdigit() and luhn_valid(digits[:9]) and digits[2:8] != "000000"


def is_valid_npwp16(digits: str) -> bool:
    """The 2024 form: "0" and a 15-digit NPWP (a NIK as NPWP is checked as a NIK)."""
    return len(digits) == 16 and digits[0] == "0" and is_valid_npwp15(digits[1:])


class IdNpwpRecognizer:
    kind = "ID_NPWP"
    placeholder = "<ID_NPWP>"
    # Above the NIK: a NIK used as a tax number next to "NPWP" is reported as an NPWP.
    priority = 78

    def may_contain(self, scan: TextScan) -> bool:
        return bool(scan.runs_with_digits(15))

    def find(self, scan: TextScan) -> Iterator[Finding]:
        text = scan.text
        for run in scan.runs_with_digits(15):
            groups = run.groups(text)
            for index, (start, end) in enumerate(groups):
                if end - start not in (2, 15, 16):
                    continue  # neither the start of a printed NPWP nor a bare one
                printed = self._printed_at(text, groups, index)
                if printed is not None:
                    yield Finding(start, printed, self.kind, self.priority)
                    continue
                digits = text[start:end]
                if len(digits) not in (15, 16) or not in_number_boundaries(text, start, end):
                    continue
                if is_valid_npwp15(digits) or is_valid_npwp16(digits):
                    npwp = scan.has_context(NPWP_CONTEXT, start, end)
                else:
                    # A NIK serves as the NPWP of a person since 2024: it is one here if "NPWP" is its nearest label.
                    npwp = is_valid_nik(digits) and (
                        scan.closest_context((NPWP_CONTEXT, NIK_CONTEXT), start, end) == NPWP_CONTEXT
                    )
                if npwp:
                    yield Finding(start, end, self.kind, self.priority)

    @staticmethod
    def _printed_at(text: str, groups: list[tuple[int, int]], first: int) -> int | None:
        """End of a printed ``TT.SSS.SSS.C-KKK.BBB`` starting at group ``first``, if it is a valid NPWP."""
        last = first + len(_PRINTED_SIZES) - 1
        if last >= len(groups):
            return None
        window = groups[first:last + 1]
        if tuple(end - start for start, end in window) != _PRINTED_SIZES:
            return None
        for (_, end), (next_start, _), separator in zip(window, window[1:], _PRINTED_SEPARATORS, strict=False):
            if text[end:next_start] != separator:
                return None
        start, end = window[0][0], window[-1][1]
        digits = "".join(text[s:e] for s, e in window)
        return end if is_valid_npwp15(digits) and in_number_boundaries(text, start, end) else None

    def mask(self, value: str) -> str:
        return partial_mask(value)
