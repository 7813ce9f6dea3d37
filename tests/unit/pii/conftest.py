"""One engine with every kind for the module tests (building it loads spaCy's tokenizer once)."""

from __future__ import annotations

import pytest

from shared.pii import PiiEngine, build_engine
from tests.conftest import DETECTION_BUDGET_FOR_TESTS_MS


@pytest.fixture(scope="session")
def engine() -> PiiEngine:
    return build_engine(field_time_budget_ms=DETECTION_BUDGET_FOR_TESTS_MS)


def found(engine: PiiEngine, text: str, key: str | None = None) -> list[tuple[str, str]]:
    """(kind, matched text) of every finding, overlaps resolved, in text order."""
    return [(f.kind, text[f.start:f.end]) for f in engine.find(text, key)]


def kinds(engine: PiiEngine, text: str, key: str | None = None) -> set[str]:
    return {kind for kind, _ in found(engine, text, key)}
