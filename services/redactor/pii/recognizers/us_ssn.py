from __future__ import annotations

import re
from collections.abc import Iterator

from services.redactor.pii.recognizers.base import Finding

_SSN = re.compile(r"(?<![\w-])(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\w-])")


def is_valid_ssn(area: str, group: str, serial: str) -> bool:
    """SSA rules: no area 000, 666 or 900-999, no group 00, no serial 0000."""
    return area not in {"000", "666"} and not area.startswith("9") and group != "00" and serial != "0000"


class UsSsnRecognizer:
    kind = "US_SSN"
    placeholder = "<US_SSN>"

    def find(self, text: str) -> Iterator[Finding]:
        for match in _SSN.finditer(text):
            area, separator, group, serial = match.groups()
            if not separator and not _ssn_context(text, match.start()):
                # Nine bare digits are far more often an id or an amount than an SSN.
                continue
            if is_valid_ssn(area, group, serial):
                yield Finding(match.start(), match.end(), self.kind, 70)

    def mask(self, value: str) -> str:
        return self.placeholder


def _ssn_context(text: str, start: int) -> bool:
    window = text[max(0, start - 40):start].lower()
    return "ssn" in window or "social security" in window or "tax id" in window
