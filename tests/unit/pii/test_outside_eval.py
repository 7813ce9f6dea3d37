"""The outside evaluation: deterministic corpus, a stable held-out split, and a gate that can fail."""

from __future__ import annotations

from shared.pii import PiiEngine
from shared.pii.eval import heldout
from shared.pii.eval.outside import CONTENT_KINDS, LOCALES, build_outside_corpus, split_of


def test_the_corpus_is_deterministic_and_covers_every_locale_and_content_kind() -> None:
    first, second = build_outside_corpus(200, seed=3), build_outside_corpus(200, seed=3)
    assert [s.text for s in first] == [s.text for s in second]
    assert {s.locale for s in first} == set(LOCALES)
    assert {s.content_kind for s in first} == set(CONTENT_KINDS)
    kinds = {p.kind for s in first for p in s.planted}
    assert {"PERSON", "PHONE", "EMAIL", "IBAN", "CARD", "IP_ADDRESS", "PASSWORD", "LOOKALIKE"} <= kinds


def test_the_held_out_split_depends_on_the_sample_number_only() -> None:
    assert [split_of(n) for n in range(50)] == [s.split for s in build_outside_corpus(50, seed=9)]
    share = sum(split_of(n) == "held-out" for n in range(5000)) / 5000
    assert 0.27 < share < 0.33


def test_a_slice_is_scored_and_the_gate_fails_on_an_engine_that_masks_nothing(engine: PiiEngine) -> None:
    samples = build_outside_corpus(300, seed=5)
    reports, _ = heldout.evaluate(samples, heldout.ours(engine))
    overall = reports["dev"].by["overall"]["all"]
    assert overall.planted > 200 and overall.rate is not None and overall.rate >= 0.97
    nothing, _ = heldout.evaluate(samples, lambda sample: sample.text)
    problems = heldout.failures(nothing["dev"])
    assert any(problem.startswith("kind PERSON") for problem in problems)
    assert "lookalike all" not in " ".join(problems)  # masking nothing keeps every look-alike
