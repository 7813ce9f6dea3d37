"""Context words, matched by spaCy over the tokens next to a candidate.

Some formats are only personal data in context: nine bare digits are an SSN after "SSN", a bare 15-digit
number is an NPWP after "NPWP", a 40-character base64 string is an AWS secret key after
"aws_secret_access_key". Matching tokens rather than substrings keeps "nik" from matching "technik" and
lets one phrase list cover "Social Security No.", "customer_ssn" and "SSN#".

Tokenising a whole field costs more than all the regular expressions together, so only a short window
around a candidate that needs context is tokenised, and only when such a candidate exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import spacy
from spacy.attrs import LOWER
from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokenizer import Tokenizer
from spacy.util import compile_infix_regex, compile_prefix_regex, compile_suffix_regex

from shared.pii.spacy_components import only_spacy_components

# How far around a candidate context words count: about ten tokens before and four after.
WINDOW_BEFORE = 64
WINDOW_AFTER = 24
AFTER_PENALTY = 8
_WORDS = re.compile(r"[^\W_]+")
# JSON keys whose labels are remembered, then forgotten all at once.
_PHRASES_REMEMBERED = 4096


def context_tokenizer() -> Language:
    """spaCy's blank English pipeline, with identifiers split so keys yield their words.

    ``customer_ssn=``, ``--phone``, ``no.ktp`` and ``HP/WA:`` become ``customer _ ssn =``, ``-- phone``,
    ``no . ktp`` and ``HP / WA :``; dotted words are not kept whole as if they were web addresses.
    """
    only_spacy_components()
    nlp = spacy.blank("en")
    tokenizer = nlp.tokenizer
    assert isinstance(tokenizer, Tokenizer)
    prefixes = [*(nlp.Defaults.prefixes or ()), r"-+"]
    # Quotes inside a token too: '"message":"reach me at' (a JSON string inside an error message).
    infixes = [*(nlp.Defaults.infixes or ()), r"[_:=#/\"`]", r"(?<=[A-Za-z])\.(?=[A-Za-z])"]
    suffixes = [*(nlp.Defaults.suffixes or ()), r"[:=#]"]
    # Each of these settings makes spaCy add its ~1,900 special cases (I'd, e.g., ...) again, a tenth of a second
    # each: they are set with no special cases, which are added back once at the end (as spaCy's from_bytes does).
    rules = tokenizer.rules
    tokenizer.rules = {}
    tokenizer.prefix_search = compile_prefix_regex(prefixes).search
    tokenizer.infix_finditer = compile_infix_regex(infixes).finditer
    tokenizer.suffix_search = compile_suffix_regex(suffixes).search
    tokenizer.url_match = None
    tokenizer.rules = rules
    # The phrase matcher reads one lexical attribute of a token, its lower-case form; tokenising reads none.
    # A word the vocabulary has not seen had all of English's (stop word, number-, URL- and e-mail-likeness,
    # shape, prefix, suffix, norm, ...) worked out and stored: for the unique words of unique text, half the
    # cost of tokenising a window, and most of what the vocabulary's strings grew by.
    nlp.vocab.lex_attr_getters = {LOWER: nlp.vocab.lex_attr_getters[LOWER]}  # type: ignore[attr-defined]  # not in the stub
    return nlp


class ContextWords:
    """Labelled phrase lists, defined by the recognizers at import time and compiled on first use."""

    def __init__(self) -> None:
        self._terms: dict[str, set[str]] = {}
        self._nlp: Language | None = None
        self._matcher: PhraseMatcher | None = None
        self._labels_by_id: dict[int, str] = {}
        # Per label, the longest word of each of its phrases: a phrase cannot match where that word is not.
        self._anchors: dict[str, frozenset[str]] = {}
        self._labels_in: dict[str, frozenset[str]] = {}

    def define(self, label: str, terms: Iterable[str]) -> str:
        self._terms.setdefault(label, set()).update(term.lower() for term in terms)
        self._matcher = None
        self._labels_in.clear()
        return label

    def warm_up(self) -> None:
        """Build the tokenizer and matcher now, so the first field does not pay for it."""
        self._compiled()

    def _compiled(self) -> tuple[Language, PhraseMatcher]:
        if self._nlp is None:
            self._nlp = context_tokenizer()
        if self._matcher is None:
            matcher = PhraseMatcher(self._nlp.vocab, attr="LOWER")
            for label, terms in sorted(self._terms.items()):
                # The tokenizer splits some words by case ("id" -> "i d" as in "I'd", "ID" stays whole), so each
                # phrase is added as written, upper-cased and title-cased: "tax id" matches "Tax ID" too.
                variants = sorted({v for term in terms for v in (term, term.upper(), term.title())})
                matcher.add(label, [self._nlp.make_doc(variant) for variant in variants])
                self._labels_by_id[self._nlp.vocab.strings[label]] = label
                self._anchors[label] = frozenset(max(_WORDS.findall(term), key=len) for term in terms)
            self._matcher = matcher
        return self._nlp, self._matcher

    def labels_in(self, phrase: str) -> frozenset[str]:
        """The labels whose phrases are in ``phrase`` (a JSON key): keys recur, each is tokenised once."""
        labels = self._labels_in.get(phrase)
        if labels is None:
            nlp, matcher = self._compiled()
            labels = frozenset(self._labels_by_id[match_id] for match_id, _, _ in matcher(nlp.make_doc(phrase)))
            if len(self._labels_in) >= _PHRASES_REMEMBERED:
                self._labels_in.clear()
            self._labels_in[phrase] = labels
        return labels

    def labels_near(self, text: str, start: int, end: int, wanted: Iterable[str]) -> dict[str, int] | None:
        """Context labels just before ``start`` or just after ``end``, each with its distance in characters.

        None when no phrase of a ``wanted`` label can be there: its words are looked for first, as plain
        words, and the tokenizer and matcher run only if one is present (most candidates have none).
        The span itself is left out. A word after the span counts as a little further than one before it at
        the same distance: "NIK: 3174..., NPWP 01.312..." reads the NIK's label from before it.
        """
        window_start = max(0, start - WINDOW_BEFORE)
        # Both halves end on word boundaries, so a cut word ("...lessn", "nik...") cannot look like a keyword.
        if window_start > 0:
            # Start after a non-word character, not only a space: '..."message":"reach me at' keeps "reach".
            while window_start < start and text[window_start - 1].isalnum():
                window_start += 1
        before = text[window_start:start]
        after = text[end:end + WINDOW_AFTER]
        if end + WINDOW_AFTER < len(text):
            space = after.rfind(" ")
            after = after[:space] if space >= 0 else ""
        nlp, matcher = self._compiled()
        words = set(_WORDS.findall(f"{before} {after}".lower()))
        if all(self._anchors.get(label, frozenset()).isdisjoint(words) for label in wanted):
            return None
        # A lone "|" token between the two halves keeps a phrase from spanning the candidate.
        doc = nlp.make_doc(f"{before} | {after}")
        after_offset = len(before) + 3
        distances: dict[str, int] = {}
        for match_id, first, last in matcher(doc):
            span = doc[first:last]
            if span.start_char < after_offset:
                distance = len(before) - span.end_char
            else:
                distance = span.start_char - after_offset + AFTER_PENALTY
            label = self._labels_by_id[match_id]
            distances[label] = min(distance, distances.get(label, distance))
        return distances


CONTEXT_WORDS = ContextWords()
