"""Person names need an installed NER pipeline; a tiny one is built here from spaCy's own parts."""

from __future__ import annotations

from pathlib import Path

import pytest
import spacy

from shared.pii import build_engine


@pytest.fixture(scope="module")
def ner_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([  # type: ignore[attr-defined]
        {"label": "PERSON", "pattern": [{"LOWER": "jane"}, {"LOWER": "roe"}]},
        {"label": "ORG", "pattern": "Acme"},
    ])
    path = tmp_path_factory.mktemp("ner") / "tiny-person-model"
    nlp.to_disk(path)
    return str(path)


def test_person_names_are_masked_when_a_model_is_configured(ner_model: str) -> None:
    engine = build_engine(None, ner_model)
    assert "PERSON" in engine.kinds
    result = engine.redact_text("Jane Roe of Acme wrote to jane@example.com")
    assert result.text == "<PERSON> of Acme wrote to <EMAIL>"
    assert result.counts == {"PERSON": 1, "EMAIL": 1}


def test_without_a_model_every_kind_means_every_kind_but_person() -> None:
    assert "PERSON" not in build_engine().kinds


def test_asking_for_person_without_a_model_is_an_error() -> None:
    with pytest.raises(ValueError, match="NER model"):
        build_engine(["EMAIL", "PERSON"])


def test_a_configured_model_that_is_not_installed_stops_the_build(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PII_NER_MODEL='no_such_pipeline'"):
        build_engine(None, "no_such_pipeline")
    with pytest.raises(ValueError, match="PII_NER_MODEL"):
        build_engine(None, str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="PII_NER_MODEL"):
        build_engine(["EMAIL"], "no_such_pipeline")  # even when this posture does not ask for names


def test_a_model_without_an_entity_recognizer_is_refused(tmp_path: Path) -> None:
    spacy.blank("en").to_disk(tmp_path / "blank")
    with pytest.raises(ValueError, match="no entity recognizer"):
        build_engine(None, str(tmp_path / "blank"))
