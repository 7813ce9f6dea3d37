"""Regression table: recall and precision per entity type on the recognizers' own generated corpus.

This corpus is built next to the recognizers (their tables, their phrasings), so it shows regressions, not
quality; ``make eval-redaction`` runs the outside corpus (``shared/pii/eval/outside.py``) instead.

Usage: python -m shared.pii.eval.quality [--samples 3000] [--seed N] [--no-presidio]
       [--show-errors N] [--json out.json]

The corpus is generated from the seed at run time (shared/pii/eval/corpus.py). Each text is
scanned as the redactor scans it: a prompt or command whole, a JSON tool input value by value with its key
as context. Presidio gets the same texts, a JSON value prefixed with ``key: `` so that its context words
can work too.

Scoring, per entity type:
- recall: a labelled entity counts as found when predictions of its kind cover every letter and digit of
  it (a partly masked e-mail is a leak, not a hit); "masked" also counts predictions of another kind;
- precision: a prediction is right when it overlaps a labelled entity of the same kind.
The run fails (exit status 1) when a target is missed: recall >= 0.99 (phone >= 0.95), precision >= 0.95,
and on every type Presidio detects too, recall and precision no lower than Presidio's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from shared.pii.engine import PiiEngine, build_engine
from shared.pii.eval.corpus import ENTITY_TYPES, KIND_OF_TYPE, Entity, Sample, build_corpus
from shared.pii.recognizers import Finding

RECALL_TARGET = 0.99
RECALL_TARGETS = {"PHONE": 0.95}
PRECISION_TARGET = 0.95
SHARED_WITH_PRESIDIO = ("EMAIL", "PHONE", "CARD", "IBAN", "US_SSN", "IPV4", "IPV6")
_SECRET_TYPE_OF_DETAIL = {
    "API_KEY": "SECRET_API_KEY",
    "PRIVATE_KEY": "SECRET_PRIVATE_KEY",
    "JWT": "SECRET_JWT",
    "URL_PASSWORD": "SECRET_URL_PASSWORD",
    "ASSIGNED_SECRET": "SECRET_ASSIGNED",
}


@dataclass(frozen=True)
class Prediction:
    start: int
    end: int
    kind: str
    type: str


@dataclass
class TypeScore:
    gold: int = 0
    found: int = 0
    masked: int = 0
    predicted: int = 0
    correct: int = 0

    @property
    def recall(self) -> float | None:
        return self.found / self.gold if self.gold else None

    @property
    def masked_rate(self) -> float | None:
        return self.masked / self.gold if self.gold else None

    @property
    def precision(self) -> float | None:
        return self.correct / self.predicted if self.predicted else None


@dataclass
class ErrorCase:
    engine: str
    error: str  # "missed" or "spurious"
    type: str
    value: str
    context: str


@dataclass
class Evaluation:
    scores: dict[str, TypeScore] = field(default_factory=lambda: {t: TypeScore() for t in ENTITY_TYPES})
    errors: list[ErrorCase] = field(default_factory=list)


def type_of_finding(finding: Finding) -> str:
    if finding.kind == "IP_ADDRESS":
        return finding.detail or "IPV4"
    if finding.kind == "SECRET":
        return _SECRET_TYPE_OF_DETAIL.get(finding.detail, "SECRET_ASSIGNED")
    return finding.kind


def ip_type(text: str, start: int, end: int) -> str:
    return "IPV6" if ":" in text[start:end] else "IPV4"


def _covered(text: str, entity: Entity, predictions: Sequence[Prediction], kind: str | None) -> bool:
    """Every letter and digit of the entity lies inside a prediction (of ``kind``, unless None)."""
    spans = [(p.start, p.end) for p in predictions if (kind is None or p.kind == kind)]
    for index in range(entity.start, entity.end):
        if text[index].isalnum() and not any(start <= index < end for start, end in spans):
            return False
    return True


def score_field(
    evaluation: Evaluation, engine_name: str, text: str, gold: Sequence[Entity], predictions: Sequence[Prediction]
) -> None:
    scores = evaluation.scores
    for entity in gold:
        score = scores[entity.type]
        score.gold += 1
        kind = KIND_OF_TYPE[entity.type]
        if _covered(text, entity, predictions, kind):
            score.found += 1
        else:
            evaluation.errors.append(
                ErrorCase(engine_name, "missed", entity.type, text[entity.start:entity.end], _excerpt(text, entity))
            )
        if _covered(text, entity, predictions, None):
            score.masked += 1
    for prediction in predictions:
        predicted_score = scores.get(prediction.type)
        if predicted_score is None:
            continue  # a kind this corpus does not label (PERSON): scored by the outside corpus instead
        score = predicted_score
        score.predicted += 1
        if any(
            KIND_OF_TYPE[e.type] == prediction.kind and e.start < prediction.end and prediction.start < e.end
            for e in gold
        ):
            score.correct += 1
        else:
            evaluation.errors.append(
                ErrorCase(
                    engine_name, "spurious", prediction.type, text[prediction.start:prediction.end],
                    _excerpt(text, Entity(prediction.start, prediction.end, prediction.type)),
                )
            )


def _excerpt(text: str, entity: Entity, margin: int = 40) -> str:
    start, end = max(0, entity.start - margin), min(len(text), entity.end + margin)
    return (text[start:entity.start] + "[[" + text[entity.start:entity.end] + "]]" + text[entity.end:end]).replace(
        "\n", "\\n"
    )


def ours(engine: PiiEngine) -> Callable[[str, str | None], list[Prediction]]:
    def predict(text: str, key: str | None) -> list[Prediction]:
        return [Prediction(f.start, f.end, f.kind, type_of_finding(f)) for f in engine.find(text, key)]

    return predict


def presidio() -> Callable[[str, str | None], list[Prediction]]:
    from shared.pii.eval.presidio_baseline import PresidioBaseline  # noqa: PLC0415 (dev-only)

    baseline = PresidioBaseline()

    def predict(text: str, key: str | None) -> list[Prediction]:
        prefix = f"{key}: " if key else ""
        full = prefix + text
        predictions = []
        for finding in baseline.find(full):
            if finding.kind not in KIND_OF_TYPE.values() and finding.kind != "IP_ADDRESS":
                continue
            start, end = max(finding.start - len(prefix), 0), finding.end - len(prefix)
            if end <= 0:
                continue  # a finding in the key
            kind_type = ip_type(text, start, end) if finding.kind == "IP_ADDRESS" else finding.kind
            predictions.append(Prediction(start, end, finding.kind, kind_type))
        return predictions

    return predict


def evaluate(
    samples: Sequence[Sample], predictor: Callable[[str, str | None], list[Prediction]], engine_name: str
) -> Evaluation:
    evaluation = Evaluation()
    for sample in samples:
        for labelled in sample.fields:
            predictions = predictor(labelled.text, labelled.key)
            score_field(evaluation, engine_name, labelled.text, labelled.entities, predictions)
    return evaluation


def failures(our: Evaluation, theirs: Evaluation | None) -> list[str]:
    problems = []
    for entity_type in ENTITY_TYPES:
        score = our.scores[entity_type]
        target = RECALL_TARGETS.get(entity_type, RECALL_TARGET)
        if score.gold == 0:
            problems.append(f"{entity_type}: no labelled samples")
        elif score.recall is not None and score.recall < target:
            problems.append(f"{entity_type}: recall {score.recall:.4f} < {target}")
        if score.precision is not None and score.precision < PRECISION_TARGET:
            problems.append(f"{entity_type}: precision {score.precision:.4f} < {PRECISION_TARGET}")
        if theirs is not None and entity_type in SHARED_WITH_PRESIDIO:
            other = theirs.scores[entity_type]
            if score.recall is not None and other.recall is not None and score.recall < other.recall:
                problems.append(f"{entity_type}: recall {score.recall:.4f} below Presidio's {other.recall:.4f}")
            if (
                score.precision is not None
                and other.precision is not None
                and score.precision < other.precision
            ):
                problems.append(
                    f"{entity_type}: precision {score.precision:.4f} below Presidio's {other.precision:.4f}"
                )
    return problems


def _fmt(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.4f}"


def render_table(our: Evaluation, theirs: Evaluation | None) -> str:
    header = f"{'entity type':<20} {'gold':>5} | {'recall':>6} {'masked':>6} {'prec.':>6} {'pred':>5}"
    if theirs is not None:
        header += f" | {'Presidio recall':>15} {'prec.':>6} {'pred':>5}"
    lines = [header, "-" * len(header)]
    for entity_type in ENTITY_TYPES:
        score = our.scores[entity_type]
        line = (
            f"{entity_type:<20} {score.gold:>5} | {_fmt(score.recall)} {_fmt(score.masked_rate)} "
            f"{_fmt(score.precision)} {score.predicted:>5}"
        )
        if theirs is not None:
            if entity_type in SHARED_WITH_PRESIDIO:
                other = theirs.scores[entity_type]
                line += f" | {_fmt(other.recall):>15} {_fmt(other.precision)} {other.predicted:>5}"
            else:
                line += f" | {'(not detected)':>15}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--no-presidio", action="store_true", help="our engine only (faster)")
    parser.add_argument("--show-errors", type=int, default=0, help="print up to N misses and false positives")
    parser.add_argument("--json", help="write the scores to this file")
    args = parser.parse_args(argv)

    samples = build_corpus(args.samples, args.seed)
    fields = sum(len(s.fields) for s in samples)
    print(f"corpus: {len(samples)} samples, {fields} fields, seed {args.seed}")
    our = evaluate(samples, ours(build_engine()), "ours")
    theirs = None if args.no_presidio else evaluate(samples, presidio(), "presidio")
    print(render_table(our, theirs))
    if args.show_errors:
        for evaluation in (our, theirs):
            if evaluation is None:
                continue
            for case in evaluation.errors[: args.show_errors]:
                print(f"  {case.engine} {case.error} {case.type}: {case.value!r} in …{case.context}…")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(
                {
                    "seed": args.seed,
                    "samples": len(samples),
                    "ours": {t: asdict(s) for t, s in our.scores.items()},
                    "presidio": None if theirs is None else {t: asdict(s) for t, s in theirs.scores.items()},
                },
                out,
                indent=2,
            )
    problems = failures(our, theirs)
    for problem in problems:
        print(f"TARGET MISSED: {problem}")
    print("all targets met" if not problems else f"{len(problems)} target(s) missed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
