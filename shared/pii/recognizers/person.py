"""Person names, from a spaCy NER pipeline the operator installed (``PII_NER_MODEL``).

There is no reliable way to find names without a trained model, so this kind exists only when one is
configured; the engine refuses to build it otherwise. The model is loaded once per process, at build time.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import spacy
from spacy.language import Language

from shared.pii.recognizers.base import Finding, TextScan

PERSON_LABELS = frozenset({"PERSON", "PER"})
# Components that do not produce entities; dropping them makes the pipeline several times faster.
_NOT_NEEDED_FOR_ENTITIES = ("parser", "lemmatizer", "tagger", "morphologizer", "attribute_ruler", "senter", "textcat")


class NerModelUnavailable(ValueError):
    """The configured NER model is neither an installed spaCy package nor a model directory."""


@lru_cache(maxsize=4)
def load_ner_model(name_or_path: str) -> Language:
    try:
        nlp = spacy.load(name_or_path, exclude=list(_NOT_NEEDED_FOR_ENTITIES))
    except (OSError, ImportError, ValueError) as exc:
        raise NerModelUnavailable(
            f"PII_NER_MODEL={name_or_path!r} is not an installed spaCy pipeline or a pipeline directory: {exc}"
        ) from None
    if not nlp.has_pipe("ner") and not nlp.has_pipe("entity_ruler"):
        raise NerModelUnavailable(f"PII_NER_MODEL={name_or_path!r} has no entity recognizer (ner or entity_ruler)")
    return nlp


class PersonRecognizer:
    kind = "PERSON"
    placeholder = "<PERSON>"
    priority = 10

    def __init__(self, nlp: Language) -> None:
        self.nlp = nlp

    def may_contain(self, scan: TextScan) -> bool:
        # Names are capitalised in every script the supported models read; no capital, no name.
        return scan.lower != scan.text

    def find(self, scan: TextScan) -> Iterator[Finding]:
        for entity in self.nlp(scan.text).ents:
            if entity.label_ in PERSON_LABELS:
                yield Finding(entity.start_char, entity.end_char, self.kind, self.priority)

    def mask(self, value: str) -> str:
        return self.placeholder
