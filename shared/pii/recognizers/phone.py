"""Phone numbers, international and national, validated with libphonenumber (``phonenumbers``).

Candidates come from the numeric runs the scan already found; only those shaped like a dialable number
reach libphonenumber, and national numbers are checked by building the number for each region rather than
re-parsing the text (a parse costs ~20 µs, a validity check of a built number 2-7 µs).

How a number is written decides where it can be from:
- ``+62 812-3456-7890`` or ``0062 ...``: international, the country code says it all;
- ``0812 3456 7890``, ``(0161) 496 0066``: national with a trunk prefix "0" (Indonesia, UK, Germany, France,
  Australia, India, the Netherlands);
- ``415-555-0134``, ``(415) 555-0134``: North American, which has no trunk prefix;
- bare digits that start with 1-9 (``4155550134``) are as often a counter or an id as a number, so they
  need a phone word nearby ("phone", "call", "tel", "WA", ...).
Timestamps, dates, times, versions and IP addresses are never phones.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import phonenumbers
from phonenumbers import PhoneNumber

from shared.pii.context import CONTEXT_WORDS
from shared.pii.recognizers.base import Finding, TextScan

PHONE_CONTEXT = CONTEXT_WORDS.define(
    "PHONE",
    [
        "phone", "phone number", "telephone", "tel", "tel.", "mobile", "cell", "cellphone", "call", "call me",
        "text me", "sms", "whatsapp", "wa", "fax", "contact", "hotline", "dial", "ring",
        "hp", "no hp", "no. hp", "nomor hp", "telp", "telepon", "handphone", "hubungi",
        "téléphone", "portable", "tél", "mon numéro", "telefon", "telefonnummer", "handy", "rufnummer", "mobil",
        "'s number", "my number", "his number", "her number", "their number", "your number", "reach", "reach me",
        "reachable", "ruf", "anrufen", "erreichbar", "appelle", "appeler", "nomor telepon", "nomor telp", "nomor hp",
        "nomor wa",
    ],
)

# Regions whose national format starts with the trunk prefix "0", in the order they are tried.
TRUNK_PREFIX_REGIONS = ("ID", "GB", "DE", "FR", "AU", "IN", "NL")
_TRUNK_COUNTRY_CODES = tuple(
    (region, phonenumbers.country_code_for_region(region)) for region in TRUNK_PREFIX_REGIONS
)
# Country code 1 is shared by two dozen regions. The Caribbean and Pacific ones are told apart by area code
# (libphonenumber's "leading digits"); anything else is the US's or Canada's.
_NORTH_AMERICAN_BY_AREA = tuple(
    (re.compile(metadata.leading_digits), (region,))
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1]
    if (metadata := phonenumbers.PhoneMetadata.metadata_for_region(region)) is not None and metadata.leading_digits
)
_US_OR_CANADA = ("US", "CA")

_MIN_DIGITS, _MAX_DIGITS = 7, 15
# Bare digits are a phone number only right next to the word: "call 4155550134", "--phone 4155550134".
_BARE_CONTEXT_DISTANCE = 32
_LOCAL_CONTEXT_DISTANCE = 32
# "call me on ", "phone: ", "my number is ", "WA ke ": a phone word ending right before the number.
_PHONE_WORD_RIGHT_BEFORE = re.compile(
    r"\b(?:call|phone|tel|telp|telefon|telefone|teléfono|telefoon|téléphone|mobile|mobil|cell|number|nummer|numéro|"
    r"número|nomor|whatsapp|wa|hp|sms|text|reach|reachable|ring|dial|fax|contact|contato|contacto|hubungi|appelle|"
    r"llámame|ligue|bel|ruf|erreichbar|bereikbaar|joignable)"
    r"(?:\s+[^\W\d_]+){0,2}?(?:\s+(?:on|at|is|ist|est|es|é|op|unter|au|al|no|di|ke|sur|via))?\s*[:.]?\s*$"
)
# "0123456789" is a placeholder, not a subscriber.
_COUNTING = frozenset({"0123456789", "01234567890", "012345678901", "0123456789012", "0987654321"})
_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?!\d)|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}$")
_EXTENSION_STARTS = frozenset(" xXeE#")
_EXTENSION = re.compile(r"\s?(?:x|ext\.?|extension|#)\s?\d{1,6}(?![\w])", re.IGNORECASE)


def _valid(number: PhoneNumber) -> bool:
    return bool(phonenumbers.is_valid_number(number))


def _valid_in(number: PhoneNumber, region: str) -> bool:
    """Checking one region avoids libphonenumber's loop over every region sharing the country code, and keeps
    the regular expressions it uses few enough to stay in ``re``'s cache."""
    return bool(phonenumbers.is_valid_number_for_region(number, region))


# "+44 (0)20 ...", "+62 (021) ...", "+31(0)20-...": the trunk "0" some people keep after the country code.
_TRUNK_AFTER_CODE = re.compile(r"^(\+\d{1,3})[\s.-]*\(0\)|^(\+\d{1,3})([\s.-]*\()0(?=\d)")


def _possible(number: PhoneNumber) -> bool:
    """The number has a length its country's numbering plan allows (libphonenumber's "possible"): how a number
    is written says it is one; whether the operator has assigned that range this year does not matter."""
    return bool(phonenumbers.is_possible_number_with_reason(number) == phonenumbers.ValidationResult.IS_POSSIBLE)


def _valid_international(raw: str) -> bool:
    raw = raw.lstrip("(")
    candidate = "+" + raw[2:] if raw.startswith("00") else raw
    candidate = _TRUNK_AFTER_CODE.sub(lambda m: m.group(1) or (m.group(2) + m.group(3)), candidate)
    try:
        number = phonenumbers.parse(candidate, None)
    except phonenumbers.NumberParseException:
        return False
    return _valid(number) or (_possible(number) and len(str(number.national_number)) >= 7)


def _possible_trunk_national(digits: str) -> bool:
    """A national number written with separators and its trunk "0" (``0412 345 678``, ``(030) 1234-5678``)."""
    national = int(digits[1:])
    return any(
        _possible(PhoneNumber(country_code=code, national_number=national)) for _, code in _TRUNK_COUNTRY_CODES
    )


# Brazil writes "(11) 91234-5678", "11 3915-0008": a two-digit area code, then four or five digits, a hyphen and
# four more. Singapore and Australia's local numbers are two groups of four ("6123 4567", "9876 5432").
_BRAZIL_NATIONAL = re.compile(r"\(?[1-9][0-9]\)?[ .]?[0-9]{4,5}-[0-9]{4}")
_EIGHT_DIGIT_LOCAL = re.compile(r"[2-9][0-9]{3}[-. ][0-9]{4}")
# North American written with separators: area code and exchange start with 2-9.
_NANP_SHAPE = re.compile(r"(?:1[-. ]?)?\(?[2-9][0-9]{2}\)?[-. ]?[2-9][0-9]{2}[-. ][0-9]{4}")


def _valid_trunk_national(digits: str) -> bool:
    national = int(digits[1:])
    return any(
        _valid_in(PhoneNumber(country_code=code, national_number=national), region)
        for region, code in _TRUNK_COUNTRY_CODES
    )


def _valid_without_plus(digits: str) -> bool:
    """``6281234567890``: an international number written without its "+" (as in wa.me links)."""
    if len(digits) < 11:
        return False
    for split in (1, 2, 3):
        code = int(digits[:split])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE and code != 1:
            return _valid(PhoneNumber(country_code=code, national_number=int(digits[split:])))
    return False


def _valid_north_american(digits: str) -> bool:
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    # Area code and exchange start with 2-9: epoch seconds (17...) fail here, before libphonenumber's check,
    # which for country code 1 tries two dozen regions.
    if len(digits) != 10 or digits[0] in "01" or digits[3] in "01":
        return False
    number = PhoneNumber(country_code=1, national_number=int(digits))
    regions = next((regions for pattern, regions in _NORTH_AMERICAN_BY_AREA if pattern.match(digits)), _US_OR_CANADA)
    return any(_valid_in(number, region) for region in regions)


def _phone_word_right_before(scan: TextScan, start: int) -> bool:
    window = max(0, start - 40)
    # The phrase ends in a letter, then at most a ":" or "." between spaces; a number after anything else
    # ('"tel": "', "=", a digit) has no phone word right before it, and the search is not run.
    tail = scan.lower[window:start].rstrip()
    if tail.endswith((":", ".")):
        tail = tail[:-1].rstrip()
    if not tail or not tail[-1].isalnum():
        return False
    return _PHONE_WORD_RIGHT_BEFORE.search(scan.lower, window, start) is not None


def _not_a_phone_shape(raw: str, digits: str) -> bool:
    """Dates, versions, amounts and dotted quads share the digits-and-separators alphabet with phone numbers."""
    bare = raw.strip("()+")
    if _DATE.match(bare):
        return True
    if len(set(digits)) == 1:
        return True
    # 08.056.286.6-202.000 (a printed NPWP) or 1.2-3: nobody writes a phone number with both.
    if "." in bare and "-" in bare:
        return True
    for separator in (".", " "):
        groups = bare.split(separator)
        if len(groups) < 3 or not all(g.isdigit() for g in groups):
            continue
        # 10.0.0.1 or 192.168.100.200 (the IP recognizer's), 1.0.20231128 (a version): not dialled that way.
        if separator == "." and (len(groups) == 4 and all(len(g) <= 3 for g in groups)) and (
            raw[0] != "+" or all(int(g) <= 255 for g in groups)
        ):
            return True
        if separator == "." and any(len(g) > 4 for g in groups):
            return True
        # 4.742.718.000 or 1 250 000: thousands, an amount (a national number would start with its "0").
        if bare[0] != "0" and raw[0] != "+" and all(len(g) == 3 for g in groups[1:]):
            return True
    return False


class PhoneRecognizer:
    kind = "PHONE"
    placeholder = "<PHONE>"
    priority = 40

    def may_contain(self, scan: TextScan) -> bool:
        return bool(scan.runs_with_digits(_MIN_DIGITS))

    def find(self, scan: TextScan) -> Iterator[Finding]:
        text = scan.text
        for run in scan.runs_with_digits(_MIN_DIGITS):
            digits = run.digit_string
            start = run.start
            if start > 0 and text[start - 1] == "(":
                start -= 1
            if start > 0 and text[start - 1] == "+":
                start -= 1
            before = text[start - 1] if start > 0 else " "
            if before.isalnum() or before in "_.-/#":
                continue  # part of an id, a path, a version or a ticket number
            if before == ":" and start > 1 and text[start - 2].isdigit():
                continue  # the seconds of a clock time ("09:16:02.936792"), a port
            for end, number in self._candidate_ends(text, run.groups(text), digits):
                found = self._check(scan, start, end, number)
                if found is not None:
                    yield found
                    break

    @staticmethod
    def _candidate_ends(text: str, groups: list[tuple[int, int]], digits: str) -> Iterator[tuple[int, str]]:
        """Where the number may end: the whole run, then before each space ("0812 3456 7890 2 times"),
        at most three candidates and only those with a phone number's digit count."""
        tried = 0
        remaining = len(digits)
        for kept in range(len(groups), 0, -1):
            end = groups[kept - 1][1]
            if kept < len(groups) and " " not in text[end:groups[kept][0]]:
                remaining -= groups[kept - 1][1] - groups[kept - 1][0]
                continue
            if remaining < _MIN_DIGITS or tried == 3:
                return
            if remaining <= _MAX_DIGITS:
                tried += 1
                yield (end + 1 if text[end:end + 1] == ")" else end), digits[:remaining]
            remaining -= groups[kept - 1][1] - groups[kept - 1][0]

    def _check(self, scan: TextScan, start: int, end: int, digits: str) -> Finding | None:
        text = scan.text
        extension = _EXTENSION.match(text, end) if end < len(text) and text[end] in _EXTENSION_STARTS else None
        span_end = extension.end() if extension else end
        if span_end < len(text):
            after = text[span_end]
            if after.isalnum() or after == "_" or (after in ".-/:" and text[span_end + 1:span_end + 2].isalnum()):
                return None  # glued to more of an identifier: "06185448-e75d-..." (a UUID), "0812.txt"
        raw = text[start:end]
        if _not_a_phone_shape(raw, digits):
            return None
        if 8 <= len(digits) <= 13 and _phone_word_right_before(scan, start):
            # Right after "phone:", "call me on", "Telefon", "WA ke": whatever its digits, it is the number
            # someone wrote down ("Telefon: 00249312009", "bereikbaar op (004)-7737048").
            valid = True
        elif raw[0] == "+" or (digits.startswith("00") and not digits.startswith("000")):
            valid = _valid_international(raw)
        elif len(digits) == end - start:
            valid = self._bare_number_is_phone(scan, start, end, digits)
        elif digits[0] == "0":
            valid = not digits.startswith("00") and (
                _valid_trunk_national(digits) or (len(digits) >= 9 and _possible_trunk_national(digits))
            )
        else:
            valid = (
                _valid_north_american(digits)
                or bool(_NANP_SHAPE.fullmatch(raw))
                or bool(_BRAZIL_NATIONAL.fullmatch(raw))
                or (bool(_EIGHT_DIGIT_LOCAL.fullmatch(raw)) and (
                    _phone_word_right_before(scan, start)
                    or scan.has_context(PHONE_CONTEXT, start, end, within=_LOCAL_CONTEXT_DISTANCE)))
            )
        return Finding(start, span_end, self.kind, self.priority) if valid else None

    @staticmethod
    def _bare_number_is_phone(scan: TextScan, start: int, end: int, digits: str) -> bool:
        """Digits without separators are as often an id, a counter or an epoch time as a phone number.

        A national number with its trunk "0" and a national number's length (``081234567890``,
        ``03519397783``) is taken as it is; anything else needs a phone word right next to it. The number
        is checked first: looking for the word costs more than libphonenumber's check of a built number.
        """
        if digits in _COUNTING:
            return False
        if digits[0] == "0":
            if not digits.startswith("00") and 10 <= len(digits) <= 13 and _valid_trunk_national(digits):
                return True  # 081234567890, 03519397783: a national number as people type it
            valid = not digits.startswith("00") and _valid_trunk_national(digits)
        else:
            valid = _valid_north_american(digits) or _valid_without_plus(digits)
        if valid and scan.has_context(PHONE_CONTEXT, start, end, within=_BARE_CONTEXT_DISTANCE):
            return True
        # Right after a phone word ("call me on 5101737791", "Telefon: 01103396733", "text 76702139"), digits
        # of a subscriber number's length are a number written down, whether or not the range is assigned.
        return 8 <= len(digits) <= 13 and _phone_word_right_before(scan, start)

    def mask(self, value: str) -> str:
        return self.placeholder


__all__ = ["PHONE_CONTEXT", "TRUNK_PREFIX_REGIONS", "PhoneRecognizer"]
