"""spaCy's own pipeline components only, for the pipelines the PII engine makes.

Each time spaCy makes a pipeline it imports every installed package that registers pipeline components with it
(the ``spacy_factories`` entry points), whether the pipeline uses them or not. The engine's pipelines (the context
tokenizer, the NER model's ``ner``) use spaCy's own components only, so nothing else is imported into the redactor:
no code it has no reason to run, and none of the import time (a development install's presidio-analyzer, for one,
compiles its 170 recognizer patterns on import: more than half a second of each redactor start, several on a
loaded machine). A package imported anyway still registers its components as it always does.
"""

from __future__ import annotations

from spacy.util import registry


def only_spacy_components() -> None:
    entry_point_factories = getattr(registry, "_entry_point_factories", None)
    if entry_point_factories is not None and hasattr(entry_point_factories, "entry_points"):
        entry_point_factories.entry_points = False
