"""Check-digit algorithms used by the recognizers: Luhn (cards, NPWP) and ISO 7064 mod 97-10 (IBAN)."""

from __future__ import annotations

# Luhn doubles every second digit from the right; a doubled digit above 9 counts as its digit sum.
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(digits: str) -> bool:
    """``digits`` is a string of ASCII digits whose last digit is the check digit."""
    if not digits:
        return False
    total = 0
    for position, ch in enumerate(reversed(digits)):
        value = ord(ch) - 48
        total += _DOUBLED[value] if position % 2 else value
    return total % 10 == 0


def iban_valid(compact: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters become 10..35, the number mod 97 is 1."""
    rearranged = compact[4:] + compact[:4]
    remainder = 0
    for ch in rearranged:
        if "0" <= ch <= "9":
            remainder = (remainder * 10 + ord(ch) - 48) % 97
        elif "A" <= ch <= "Z":
            remainder = (remainder * 100 + ord(ch) - 55) % 97
        else:
            return False
    return remainder == 1
