"""A small slice of the labelled corpus through the quality harness, ours and Presidio's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.pii import PiiEngine
from shared.pii.eval import quality
from shared.pii.eval.corpus import ENTITY_TYPES, build_corpus


def test_the_corpus_is_deterministic_and_covers_twelve_types() -> None:
    first, second = build_corpus(60, seed=5), build_corpus(60, seed=5)
    assert [[f.text for f in s.fields] for s in first] == [[f.text for f in s.fields] for s in second]
    assert len(ENTITY_TYPES) >= 12
    for sample in first:
        for labelled in sample.fields:
            for entity in labelled.entities:
                assert 0 <= entity.start < entity.end <= len(labelled.text)


def test_a_slice_meets_the_targets(engine: PiiEngine) -> None:
    samples = build_corpus(400, seed=11)
    ours = quality.evaluate(samples, quality.ours(engine), "ours")
    gold = sum(score.gold for score in ours.scores.values())
    found = sum(score.found for score in ours.scores.values())
    predicted = sum(score.predicted for score in ours.scores.values())
    correct = sum(score.correct for score in ours.scores.values())
    assert gold > 300
    assert found / gold >= 0.98, [(e.type, e.value) for e in ours.errors if e.error == "missed"]
    assert correct / predicted >= 0.97, [(e.type, e.value) for e in ours.errors if e.error == "spurious"]


def test_the_harness_scores_presidio_on_the_same_texts(engine: PiiEngine) -> None:
    samples = build_corpus(25, seed=3)
    theirs = quality.evaluate(samples, quality.presidio(), "presidio")
    ours = quality.evaluate(samples, quality.ours(engine), "ours")
    assert theirs.scores["EMAIL"].gold == ours.scores["EMAIL"].gold > 0
    assert theirs.scores["SECRET_JWT"].predicted == 0  # Presidio has no secret recognizers
    table = quality.render_table(ours, theirs)
    assert "Presidio recall" in table and "SECRET_API_KEY" in table


def test_the_command_exits_non_zero_exactly_when_a_target_is_missed(
    engine: PiiEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = build_corpus(40, seed=2)
    problems = quality.failures(quality.evaluate(samples, quality.ours(engine), "ours"), None)
    scores = tmp_path / "scores.json"
    code = quality.main(["--samples", "40", "--seed", "2", "--no-presidio", "--json", str(scores)])
    printed = capsys.readouterr().out
    assert code == (1 if problems else 0), printed
    assert ("all targets met" in printed) == (not problems)
    assert printed.count("TARGET MISSED") == len(problems)
    written = json.loads(scores.read_text())
    assert written["samples"] == 40 and written["presidio"] is None and "EMAIL" in written["ours"]
