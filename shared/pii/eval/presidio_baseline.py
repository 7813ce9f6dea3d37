"""Presidio's analyzer as the baseline, with a real trained spaCy pipeline (en_core_web_sm 3.8.0).

Presidio runs as a deployment would: its spaCy NLP engine on the installed English pipeline (the same one our
person recognizer uses), so its SpacyRecognizer finds names (PERSON) from NER, and its pattern, checksum and
context recognizers find the rest. Its score threshold is left at Presidio's default.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import spacy
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import SpacyNlpEngine

from shared.pii.recognizers.person import DEFAULT_NER_MODEL

# Presidio's entity names for the kinds both engines detect.
PRESIDIO_KIND = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
    "PERSON": "PERSON",
}


class InstalledSpacyNlpEngine(SpacyNlpEngine):
    """Presidio's spaCy engine on the installed pipeline package, loaded by name (never downloaded)."""

    def load(self) -> None:
        self.nlp = {"en": spacy.load(DEFAULT_NER_MODEL)}  # type: ignore[assignment]  # typed before load()


@dataclass(frozen=True)
class PresidioFinding:
    start: int
    end: int
    kind: str


class PresidioBaseline:
    def __init__(self) -> None:
        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
        nlp_engine = InstalledSpacyNlpEngine(models=[{"lang_code": "en", "model_name": DEFAULT_NER_MODEL}])
        self.analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=["en"])
        self.entities = sorted(PRESIDIO_KIND)
        self.warm_up()

    def warm_up(self) -> None:
        """The URL recognizer's tldextract tries the network once; do it before anything is timed."""
        self.analyzer.analyze("warm up: see https://example.com/a or mail a@example.com", language="en")

    def analyze(self, text: str) -> list[Any]:
        return list(self.analyzer.analyze(text, language="en", entities=self.entities))

    def find(self, text: str) -> list[PresidioFinding]:
        return [PresidioFinding(r.start, r.end, PRESIDIO_KIND[r.entity_type]) for r in self.analyze(text)]

    def find_many(self, texts: Iterable[str]) -> list[list[PresidioFinding]]:
        return [self.find(text) for text in texts]
