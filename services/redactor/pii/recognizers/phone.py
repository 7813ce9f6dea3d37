from __future__ import annotations

import re
from collections.abc import Iterator

import phonenumbers

from services.redactor.pii.recognizers.base import Finding

# Candidates first, with a cheap regex; only those go through libphonenumber's full validation. Running its
# matcher over whole texts is ten times slower and adds nothing for texts without digit runs.
_CANDIDATE = re.compile(r"(?<![\w.+/-])(?:\+|00)?\(?\d[\d ().-]{6,20}\d(?![\w/-])")
_DATE_OR_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}|^\d{1,2}[:.]\d{2}[:.]\d{2}|^\d{4}\.\d{1,2}\.\d{1,2}$")
_VERSION = re.compile(r"^\d+(\.\d+){2,}$")


class PhoneRecognizer:
    kind = "PHONE"
    placeholder = "<PHONE>"

    def __init__(self, regions: tuple[str, ...] = ("US", "GB", "DE", "FR", "ID", "IN", "AU")) -> None:
        self.regions = regions

    def find(self, text: str) -> Iterator[Finding]:
        for match in _CANDIDATE.finditer(text):
            raw = match.group(0).rstrip(").-")
            digits = sum(ch.isdigit() for ch in raw)
            if digits < 7 or digits > 15 or _DATE_OR_TIME.match(raw) or _VERSION.match(raw):
                continue
            if raw.isdigit() and not raw.startswith("0") and len(raw) > 11:
                continue  # epoch timestamps and long ids, not dialable numbers
            if self._is_phone(raw):
                yield Finding(match.start(), match.start() + len(raw), self.kind, 30)

    def _is_phone(self, raw: str) -> bool:
        international = raw.startswith(("+", "00"))
        for region in (None,) if international else self.regions:
            try:
                number = phonenumbers.parse(raw, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                return True
        return False

    def mask(self, value: str) -> str:
        return self.placeholder
