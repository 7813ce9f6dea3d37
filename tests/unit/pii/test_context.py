"""Context words: the tokenizer that reads the window around a candidate, and what it finds there."""

from __future__ import annotations

import pytest
import spacy

from shared.pii.context import CONTEXT_WORDS, ContextWords, context_tokenizer

WINDOWS = [
    'customer_ssn=078-05-1120 and --phone 4155550134',
    'HP/WA: 0812 3456 7890, no.ktp 3174012304850001',
    '{"message":"reach me at +62 812-3456-7890"}',
    "Social Security No. 078051120 (Tax ID: 12-3456789)",
    "Telefonnummer:\t030 1234567\n  Handy \u2013  0151 2345678",
    "e-mail Jürgen.Müller@example.de or call 1-800-FLOWERS now!!",
    "Ruf mich an: 0171/1234567 · nomor WA ke 0812-3456-7890 ...",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "Don't, can't, O'Brien's number's 555-0134; http://x.io/a?b=c#d",
    "  leading and trailing spaces   |  double  spaces ",
]


@pytest.mark.parametrize("window", WINDOWS)
def test_the_lean_vocabulary_tokenises_as_the_full_one(window: str) -> None:
    """Only a token's lower-case form is worked out for new words; the tokens, their offsets and lower-case
    forms are what the tokenizer with every English lexical attribute gives."""
    lean = context_tokenizer()
    full = context_tokenizer()  # the same rules, over a vocabulary that works out every English attribute
    every_attribute = dict(spacy.blank("en").vocab.lex_attr_getters)  # type: ignore[attr-defined]
    full.vocab.lex_attr_getters = every_attribute  # type: ignore[attr-defined]
    assert len(lean.vocab.lex_attr_getters) == 1 < len(every_attribute)  # type: ignore[attr-defined]
    assert [(t.text, t.lower_, t.idx) for t in lean.make_doc(window)] == [
        (t.text, t.lower_, t.idx) for t in full.make_doc(window)
    ]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("customer_ssn=078-05-1120", "US_SSN"),
        ("Social Security No. 078051120", "US_SSN"),
        ("HP/WA: 0812 3456 7890", "PHONE"),
        ("Telefonnummer: 030 1234567", "PHONE"),
    ],
)
def test_context_words_are_found_next_to_a_candidate(text: str, label: str) -> None:
    start = next(index for index, ch in enumerate(text) if ch.isdigit())
    distances = CONTEXT_WORDS.labels_near(text, start, len(text), (label,))
    assert distances is not None and label in distances


def test_a_key_s_labels_are_remembered_until_a_label_is_defined() -> None:
    words = ContextWords()
    words.define("FIRST", ["order"])
    assert words.labels_in("customer_order_id") == {"FIRST"}
    assert words.labels_in("customer_order_id") == {"FIRST"}
    words.define("SECOND", ["customer"])
    assert words.labels_in("customer_order_id") == {"FIRST", "SECOND"}
