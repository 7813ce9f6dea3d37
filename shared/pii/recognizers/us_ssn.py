"""US Social Security numbers: ``AAA-GG-SSSS`` with the SSA's area/group/serial rules.

The dashed form is distinctive enough on its own. Nine bare digits, or the groups separated by spaces or
dots, are far more often an id, an amount or part of a phone number, so they need a context word ("SSN",
"social security", ...) nearby or in the JSON key.
"""

from __future__ import annotations

from collections.abc import Iterator

from shared.pii.context import CONTEXT_WORDS
from shared.pii.recognizers.base import Finding, TextScan, joined_to_word

SSN_CONTEXT = CONTEXT_WORDS.define(
    "US_SSN",
    [
        "ssn", "ssns", "ss#", "ssn#", "ss no", "social security", "social security number", "social security no",
        "social sec", "soc sec", "sozialversicherungsnummer", "taxpayer id", "tin",
    ],
)


# Nine bare digits count as an SSN only right after (or before) the word: "SSN 078051120", "ssn: 078051120".
_BARE_CONTEXT_DISTANCE = 24


def is_valid_ssn(area: str, group: str, serial: str) -> bool:
    """SSA rules: no area 000, 666 or 900-999, no group 00, no serial 0000."""
    return area not in {"000", "666"} and not area.startswith("9") and group != "00" and serial != "0000"


class UsSsnRecognizer:
    kind = "US_SSN"
    placeholder = "<US_SSN>"
    priority = 70

    def may_contain(self, scan: TextScan) -> bool:
        return bool(scan.runs_with_digits(9))

    def find(self, scan: TextScan) -> Iterator[Finding]:
        text = scan.text
        for run in scan.runs_with_digits(9):
            groups = run.groups(text)
            for index, (start, end) in enumerate(groups):
                if end - start == 9:
                    if self._bounded(text, start, end) and is_valid_ssn(
                        text[start:start + 3], text[start + 3:start + 5], text[start + 5:end]
                    ) and scan.has_context(SSN_CONTEXT, start, end, within=_BARE_CONTEXT_DISTANCE):
                        yield Finding(start, end, self.kind, self.priority)
                    continue
                if end - start != 3 or index + 2 >= len(groups):
                    continue
                (group_start, group_end), (serial_start, serial_end) = groups[index + 1], groups[index + 2]
                if group_end - group_start != 2 or serial_end - serial_start != 4:
                    continue
                separator = text[end:group_start]
                if separator not in {"-", " ", "."} or text[group_end:serial_start] != separator:
                    continue
                if not self._bounded(text, start, serial_end) or not is_valid_ssn(
                    text[start:end], text[group_start:group_end], text[serial_start:serial_end]
                ):
                    continue
                if separator == "-" or scan.has_context(SSN_CONTEXT, start, serial_end):
                    yield Finding(start, serial_end, self.kind, self.priority)

    @staticmethod
    def _bounded(text: str, start: int, end: int) -> bool:
        """Not glued to a word, and not one piece of a longer dashed or dotted number."""
        if joined_to_word(text, start, end, "-"):
            return False
        if start >= 2 and text[start - 1] == "." and text[start - 2].isdigit():
            return False
        return not (end + 1 < len(text) and text[end] in ".-" and text[end + 1].isdigit())

    def mask(self, value: str) -> str:
        return self.placeholder
