"""Presidio's analyzer as the baseline, with its pattern recognizers only.

No spaCy model can be installed here, so Presidio gets a blank English pipeline for tokens and its
model-based SpacyRecognizer (names, places, dates from NER) is dropped: what remains is Presidio's own
pattern, checksum and context logic, the same thing our engine does. Its score threshold is left at
Presidio's default, as a deployment that did not tune it would run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import spacy
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import SpacyNlpEngine

# Presidio's entity names for the kinds both engines detect.
PRESIDIO_KIND = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
}


class BlankSpacyNlpEngine(SpacyNlpEngine):
    """Presidio's spaCy engine on ``spacy.blank("en")``: tokens and sentences, no trained model."""

    def load(self) -> None:
        self.nlp = {"en": spacy.blank("en")}  # type: ignore[assignment]  # Presidio types it before load()


@dataclass(frozen=True)
class PresidioFinding:
    start: int
    end: int
    kind: str


class PresidioBaseline:
    def __init__(self) -> None:
        # Presidio logs a warning per recognizer it cannot use for the blank model; they are expected here.
        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
        nlp_engine = BlankSpacyNlpEngine(models=[{"lang_code": "en", "model_name": "blank"}])
        self.analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=["en"])
        self.analyzer.registry.remove_recognizer("SpacyRecognizer")
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
