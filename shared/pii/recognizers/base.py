"""What every recognizer is, and the per-text scan they share.

A recognizer is a small, validated object that finds one kind of entity. The engine hands all of them the
same ``TextScan``, which computes the expensive views of the text (lower-case copy, numeric runs, context
words) at most once and only when some recognizer asks: most fields are short and hold nothing, and the
engine must stay cheap for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from shared.pii.context import CONTEXT_WORDS


@dataclass(frozen=True, order=True)
class Finding:
    start: int
    end: int
    kind: str
    # Higher wins when findings overlap: structured, checksummed ids beat loose patterns.
    priority: int = 0
    # A finer type for reports and the quality harness (e.g. "IPV6", "JWT"); never the matched value.
    detail: str = ""


class Recognizer(Protocol):
    kind: str
    placeholder: str

    def may_contain(self, scan: TextScan) -> bool:
        """A cheap necessary condition: False means ``find`` would find nothing, so it is not called.

        Most fields the redactor sees are short attribute values ("xterm", a UUID, "claude-opus-5-5"); this
        keeps them from paying for every recognizer.
        """
        ...

    def find(self, scan: TextScan) -> Iterable[Finding]: ...

    def mask(self, value: str) -> str: ...


# Digits with the separators numbers are written with, at least seven characters long (the shortest entity
# made of digits, "1.1.1.1", has seven). Starting with a digit lets the regex engine skip ahead to the next
# digit on its own (an alternative or a look-behind in front would make the pass four times slower); a
# leading "+" or "(" is looked at by the phone recognizer.
_NUMERIC_RUN = re.compile(r"[0-9][0-9().\-/ +]{5,}[0-9)]")
_SHORTEST_RUN = 7
_DIGIT_GROUP = re.compile(r"[0-9]+")
_SPAN = re.Match.span  # mapped over matches: the list is built in C, with no Python call per digit group


_SEPARATORS_REMOVED = str.maketrans("", "", "().-/ +")


class NumericRun:
    """A stretch of digits and separators, e.g. ``+1 (415) 555-0134`` or ``3174 0123 0485 0001``, and its
    digits alone (``14155550134``)."""

    __slots__ = ("_groups", "digit_string", "end", "start")

    def __init__(self, start: int, end: int, digit_string: str) -> None:
        self.start = start
        self.end = end
        self.digit_string = digit_string
        self._groups: list[tuple[int, int]] | None = None

    def groups(self, text: str) -> list[tuple[int, int]]:
        """The (start, end) of each block of consecutive digits in the run."""
        if self._groups is None:
            self._groups = list(map(_SPAN, _DIGIT_GROUP.finditer(text, self.start, self.end)))
        return self._groups



class TextScan:
    """One text under detection, with lazily computed views shared by every recognizer.

    ``field_name`` is the JSON key the text was the value of, if any: ``{"password": "hunter2"}`` carries
    its context in the key, which the value alone does not show.
    """

    __slots__ = ("_context_cache", "_field_labels", "_lower", "_runs", "_runs_by_digits", "field_name", "text")

    def __init__(self, text: str, field_name: str | None = None) -> None:
        self.text = text
        self.field_name = field_name
        self._lower: str | None = None
        self._runs: list[NumericRun] | None = None
        self._runs_by_digits: dict[int, list[NumericRun]] = {}
        self._field_labels: frozenset[str] | None = None
        self._context_cache: dict[tuple[int, int], dict[str, int]] = {}

    @property
    def lower(self) -> str:
        if self._lower is None:
            self._lower = self.text.lower()
        return self._lower

    @property
    def numeric_runs(self) -> list[NumericRun]:
        """Every run of digits and number separators of seven characters or more, in one regex pass.

        Runs glued to a word on their left (``v1.2.3.4``, a UUID's ``4256-137``, ``id_20261128``) are part
        of an identifier and no recognizer takes them, so they are left out here once for all, but for what
        follows a space in them.
        """
        if self._runs is None:
            text = self.text
            runs = []
            for match in _NUMERIC_RUN.finditer(text):
                start, end = match.span()
                if start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
                    # "npwp16 0013121660091000": what follows a space is a number of its own.
                    space = text.find(" ", start, end)
                    if space < 0 or end - space <= _SHORTEST_RUN:
                        continue
                    start = space + 1
                    while text[start] == " ":
                        start += 1
                runs.append(NumericRun(start, end, text[start:end].translate(_SEPARATORS_REMOVED)))
            self._runs = runs
        return self._runs

    def runs_with_digits(self, at_least: int) -> list[NumericRun]:
        """The numeric runs holding at least that many digits: each recognizer looks only at runs long enough
        for its entity (a phone number has 7, an SSN 9, a card 12, an NPWP 15, a NIK 16)."""
        runs = self._runs_by_digits.get(at_least)
        if runs is None:
            runs = [run for run in self.numeric_runs if len(run.digit_string) >= at_least]
            self._runs_by_digits[at_least] = runs
        return runs

    def has_context(self, label: str, start: int, end: int, within: int | None = None) -> bool:
        """Whether a context word for ``label`` is in the JSON key, or in the few tokens around the span.

        ``within`` narrows the window to that many characters, for formats that are weak on their own.
        """
        if self.closest_context((label,), start, end) is None:
            return False
        if within is None or (self._field_labels is not None and label in self._field_labels):
            return True
        return self._context_cache[(start, end)][label] <= within

    def closest_context(self, labels: tuple[str, ...], start: int, end: int) -> str | None:
        """Of competing labels ("ID_NIK" or "CARD"?), the one whose context word is nearest the span.

        The JSON key is nearest of all; then the tokens around the span.
        """
        if self.field_name:
            if self._field_labels is None:
                self._field_labels = CONTEXT_WORDS.labels_in(self.field_name)
            for label in labels:
                if label in self._field_labels:
                    return label
        distances = self._context_cache.get((start, end))
        if distances is None:
            distances = CONTEXT_WORDS.labels_near(self.text, start, end, labels)
            if distances is None:
                return None  # none of these labels' words is near; nothing to cache for the others
            self._context_cache[(start, end)] = distances
        present = [label for label in labels if label in distances]
        return min(present, key=distances.__getitem__) if present else None


def joined_to_word(text: str, start: int, end: int, extra: str = "") -> bool:
    """True when the span is glued to a word (``v1.2.3``, ``ORD-123``, ``abc123``): then it is part of an id."""
    if start > 0:
        before = text[start - 1]
        if before.isalnum() or before == "_" or before in extra:
            return True
    if end < len(text):
        after = text[end]
        if after.isalnum() or after == "_" or after in extra:
            return True
    return False


def followed_by_digit_after(text: str, end: int, separators: str = ".-") -> bool:
    """``1.2.3.4.5`` or ``123-45-6789-0``: a separator and another digit right after the span."""
    return end + 1 < len(text) and text[end] in separators and text[end + 1].isdigit()


def preceded_by_digit_before(text: str, start: int, separators: str = ".-") -> bool:
    return start >= 2 and text[start - 1] in separators and text[start - 2].isdigit()


def partial_mask(value: str, keep_first: int = 2, keep_last: int = 4) -> str:
    """``3174012304850001`` -> ``31**********0001``; separators stay where they are."""
    total = sum(ch.isdigit() for ch in value)
    out = []
    index = 0
    for ch in value:
        if ch.isdigit():
            out.append(ch if index < keep_first or index >= total - keep_last else "*")
            index += 1
        else:
            out.append(ch)
    return "".join(out)
