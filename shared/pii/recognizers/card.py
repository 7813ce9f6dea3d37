"""Payment card numbers: a known issuer prefix and length, and a valid Luhn check digit.

Written bare (``4111111111111111``) or in groups with one consistent separator (``4111 1111 1111 1111``,
``3782-822463-10005``). Order numbers and other ids of the same length fail Luhn nine times in ten and
mostly have no issuer prefix. Twelve-digit Maestro numbers are too short to tell from ids and need a card
word nearby.
"""

from __future__ import annotations

from collections.abc import Iterator

from shared.pii.checksums import luhn_valid
from shared.pii.context import CONTEXT_WORDS
from shared.pii.recognizers.base import Finding, TextScan, joined_to_word

CARD_CONTEXT = CONTEXT_WORDS.define(
    "CARD",
    [
        "card", "card number", "card no", "credit card", "debit card", "cc", "ccn", "pan", "cvv", "visa",
        "mastercard", "master card", "amex", "american express", "discover", "diners", "jcb", "maestro",
        "unionpay", "payment", "paid with", "pay with", "charge", "charged", "kartu", "kartu kredit", "kartu debit",
        "nomor kartu", "carte", "carte bancaire", "cb", "kreditkarte", "karte", "kartennummer", "kaart", "kaartnummer",
        "creditcard", "pinpas", "tarjeta", "número de tarjeta", "cartão", "cartao", "numéro de carte",
    ],
)

# (prefixes, allowed lengths) per network; the ranges are the issuers' published IIN ranges.
_NETWORKS: tuple[tuple[tuple[str, ...], frozenset[int]], ...] = (
    (("4",), frozenset({13, 16, 19})),  # Visa
    (("51", "52", "53", "54", "55", *(str(p) for p in range(2221, 2721))), frozenset({16})),  # Mastercard
    (("34", "37"), frozenset({15})),  # American Express
    (("6011", "65", *(str(p) for p in range(644, 650))), frozenset(range(16, 20))),  # Discover
    # JCB issues from 3528-3589; the rest of 35xx is unassigned rather than someone else's, so take it all.
    (("35",), frozenset(range(16, 20))),  # JCB
    (("2131", "1800"), frozenset({15})),  # JCB, legacy 15-digit
    (("300", "301", "302", "303", "304", "305", "3095", "36", "38", "39"), frozenset(range(14, 20))),  # Diners
    (("62",), frozenset(range(16, 20))),  # UnionPay
    (("2200", "2201", "2202", "2203", "2204"), frozenset(range(16, 20))),  # Mir
    # Maestro, with 0604 from older IIN tables (test data generators still emit it).
    (("50", "56", "57", "58", "6304", "6390", "67", "0604"), frozenset(range(12, 20))),
)
_MIN_DIGITS, _MAX_DIGITS = 12, 19


def has_card_prefix(digits: str) -> bool:
    length = len(digits)
    return any(length in lengths and digits.startswith(prefixes) for prefixes, lengths in _NETWORKS)


def is_card_number(digits: str) -> bool:
    """Issuer prefix, length and Luhn; all-same-digit fillers are not cards."""
    return has_card_prefix(digits) and luhn_valid(digits) and len(set(digits)) > 1


class CardRecognizer:
    kind = "CARD"
    placeholder = "<CARD>"
    priority = 74

    def may_contain(self, scan: TextScan) -> bool:
        return bool(scan.runs_with_digits(_MIN_DIGITS))

    def find(self, scan: TextScan) -> Iterator[Finding]:
        text = scan.text
        for run in scan.runs_with_digits(_MIN_DIGITS):
            groups = run.groups(text)
            index = 0
            while index < len(groups):
                size = groups[index][1] - groups[index][0]
                # A card starts with a group of 3-6 digits (then more groups) or is one block of 12-19.
                if not (3 <= size <= 6 or _MIN_DIGITS <= size <= _MAX_DIGITS):
                    index += 1
                    continue
                found = self._longest_card_from(scan, groups, index)
                if found is None:
                    index += 1
                    continue
                yield found[0]
                index = found[1]

    def _longest_card_from(
        self, scan: TextScan, groups: list[tuple[int, int]], first: int
    ) -> tuple[Finding, int] | None:
        """The longest card starting at group ``first``, and the index of the group after it."""
        text = scan.text
        separator: str | None = None
        digits = ""
        windows: list[tuple[int, str]] = []
        for index in range(first, len(groups)):
            start, end = groups[index]
            if index > first:
                between = text[groups[index - 1][1]:start]
                if separator is None:
                    separator = between
                # One consistent single-character separator, and groups of a plausible size.
                if between != separator or separator not in {" ", "-"} or not 3 <= end - start <= 6:
                    break
                if index == first + 1 and not 3 <= groups[first][1] - groups[first][0] <= 6:
                    break
            digits += text[start:end]
            if len(digits) > _MAX_DIGITS:
                break
            windows.append((index, digits))
        for last, number in reversed(windows):
            if len(number) < _MIN_DIGITS or not is_card_number(number):
                continue
            start, end = groups[first][0], groups[last][1]
            if joined_to_word(text, start, end) or _continues_a_number(text, start, end):
                continue
            if len(number) == _MIN_DIGITS and not scan.has_context(CARD_CONTEXT, start, end):
                continue
            return Finding(start, end, self.kind, self.priority), last + 1
        return None

    def mask(self, value: str) -> str:
        return self.placeholder


def _continues_a_number(text: str, start: int, end: int) -> bool:
    """``0.4111111111111111`` or ``4111111111111111-2``: part of a bigger dotted or dashed number."""
    if start >= 2 and text[start - 1] in ".-" and text[start - 2].isdigit():
        return True
    return end + 1 < len(text) and text[end] in ".-" and text[end + 1].isdigit()
