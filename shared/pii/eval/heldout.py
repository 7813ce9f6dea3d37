"""``make eval-redaction``: the engine and Presidio on the outside corpus, gated per kind on the held-out split.

Usage: python -m shared.pii.eval.heldout [--samples 4000] [--seed 7] [--no-presidio] [--show-errors N]
       [--json out.json]

Each text goes through what the pipeline runs on that content: ``redact_json_text`` for a JSON tool input,
``redact_text`` otherwise. Presidio (with the same trained spaCy pipeline) anonymises the same raw texts, each
finding replaced by ``<TYPE>``.

Scoring, per planted value, on the redacted output:
- recall: found when none of the value's pieces (its whitespace-separated parts with three letters or digits or
  more) is left in the output; a value masked in part ("Hans <PERSON>") is a miss;
- look-alike survival: the look-alike is still in the output, whole.
Reported per kind, per locale (phones also per country), per content kind, and overall, for both splits.
The gate (exit 1) applies to the held-out split: every structured kind >= 0.99 (phones of every country
too), PERSON >= 0.90, overall >= 0.97, look-alike survival >= 0.97. Errors are printed for the dev split only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shared.pii.engine import PiiEngine, build_engine
from shared.pii.eval.outside import OutsideSample, build_outside_corpus

STRUCTURED_FLOOR = 0.99
FLOORS = {"PERSON": 0.90}
OVERALL_FLOOR = 0.97
LOOKALIKE_FLOOR = 0.97
# Groups with fewer planted values than this are reported but not gated on their own (too few to judge).
MIN_GATED = 20
_PIECE = re.compile(r"\S+")


@dataclass
class Tally:
    planted: int = 0
    hit: int = 0

    @property
    def rate(self) -> float | None:
        return self.hit / self.planted if self.planted else None


def _pieces(value: str) -> list[str]:
    return [p.strip(".,;:()[]{}\"'") for p in _PIECE.findall(value) if sum(ch.isalnum() for ch in p) >= 3]


def _found(original: str, redacted: str, value: str) -> bool:
    for piece in _pieces(value):
        # A piece that also occurs outside the value in the original text proves nothing when it survives.
        if piece and piece in redacted and original.count(piece) <= value.count(piece):
            return False
    return True


Redact = Callable[[OutsideSample], str]


def _plain(sample: OutsideSample, text: str) -> str:
    """A JSON tool input as its strings (keys and values), so values are compared unescaped."""
    if sample.content_kind != "json_tool":
        return text
    try:
        document = json.loads(text)
    except ValueError:
        return text
    strings: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            strings.append(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                strings.append(key)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    return "\n".join(strings)


def ours(engine: PiiEngine) -> Redact:
    def redact(sample: OutsideSample) -> str:
        if sample.content_kind == "json_tool":
            return str(engine.redact_json_text(sample.text).text)
        return str(engine.redact_text(sample.text).text)

    return redact


def presidio() -> Redact:
    from shared.pii.eval.presidio_baseline import PresidioBaseline  # noqa: PLC0415 (dev-only)

    baseline = PresidioBaseline()

    def redact(sample: OutsideSample) -> str:
        text = sample.text
        findings = sorted(baseline.find(text), key=lambda f: (f.start, -f.end))
        pieces, cursor = [], 0
        for finding in findings:
            if finding.start < cursor:
                continue
            pieces.append(text[cursor:finding.start])
            pieces.append(f"<{finding.kind}>")
            cursor = finding.end
        pieces.append(text[cursor:])
        return "".join(pieces)

    return redact


@dataclass
class Report:
    by: dict[str, dict[str, Tally]]

    def tally(self, group: str, key: str) -> Tally:
        return self.by.setdefault(group, {}).setdefault(key, Tally())


def evaluate(samples: Sequence[OutsideSample], redact: Redact) -> tuple[dict[str, Report], list[str]]:
    reports = {"dev": Report({}), "held-out": Report({})}
    dev_errors: list[str] = []
    for sample in samples:
        output = _plain(sample, redact(sample))
        original = _plain(sample, sample.text)
        report = reports[sample.split]
        for planted in sample.planted:
            if planted.kind == "LOOKALIKE":
                survived = planted.value in output
                for group, key in (("lookalike", "all"), ("lookalike", planted.detail)):
                    tally = report.tally(group, key)
                    tally.planted += 1
                    tally.hit += survived
                if not survived and sample.split == "dev":
                    dev_errors.append(f"masked look-alike {planted.detail} {planted.value!r}: {output[:160]!r}")
                continue
            found = _found(original, output, planted.value)
            keys = [("kind", planted.kind), ("locale", sample.locale), ("content", sample.content_kind),
                    ("overall", "all")]
            if planted.kind == "PHONE":
                keys.append(("phone country", planted.detail))
            for group, key in keys:
                tally = report.tally(group, key)
                tally.planted += 1
                tally.hit += found
            if not found and sample.split == "dev":
                dev_errors.append(f"missed {planted.kind} {planted.value!r} ({sample.locale}): {output[:160]!r}")
    return reports, dev_errors


def _fmt(tally: Tally | None) -> str:
    return "      -" if tally is None or tally.rate is None else f"{tally.rate:7.4f}"


def render(ours_reports: dict[str, Report], theirs: dict[str, Report] | None) -> str:
    lines = []
    for split in ("dev", "held-out"):
        ours_report = ours_reports[split]
        lines.append(f"== {split} ==")
        header = f"{'group':<14} {'key':<22} {'n':>5} {'ours':>7}" + (f" {'Presidio':>8}" if theirs else "")
        lines.append(header)
        for group in ("overall", "kind", "phone country", "locale", "content", "lookalike"):
            for key, tally in sorted(ours_report.by.get(group, {}).items()):
                line = f"{group:<14} {key:<22} {tally.planted:>5} {_fmt(tally)}"
                if theirs is not None:
                    line += f" {_fmt(theirs[split].by.get(group, {}).get(key))}"
                lines.append(line)
    return "\n".join(lines)


def failures(report: Report) -> list[str]:
    problems = []

    def check(group: str, key: str, floor: float) -> None:
        tally = report.by.get(group, {}).get(key)
        if tally is None or tally.planted == 0:
            problems.append(f"{group} {key}: nothing planted")
        elif tally.planted >= MIN_GATED and tally.rate is not None and tally.rate < floor:
            problems.append(f"{group} {key}: {tally.rate:.4f} < {floor}")

    for kind in report.by.get("kind", {}):
        check("kind", kind, FLOORS.get(kind, STRUCTURED_FLOOR))
    for country in report.by.get("phone country", {}):
        check("phone country", country, STRUCTURED_FLOOR)
    check("overall", "all", OVERALL_FLOOR)
    check("lookalike", "all", LOOKALIKE_FLOOR)
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-presidio", action="store_true")
    parser.add_argument("--show-errors", type=int, default=0, help="print up to N errors of the dev split")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)

    samples = build_outside_corpus(args.samples, args.seed)
    held_out = sum(1 for s in samples if s.split == "held-out")
    print(f"outside corpus: {len(samples)} samples ({held_out} held out), seed {args.seed}")
    ours_reports, errors = evaluate(samples, ours(build_engine()))
    theirs = None if args.no_presidio else evaluate(samples, presidio())[0]
    print(render(ours_reports, theirs))
    for error in errors[: args.show_errors]:
        print("  dev:", error)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({
                name: {split: {g: {k: vars(t) for k, t in keys.items()} for g, keys in report.by.items()}
                       for split, report in reports.items()}
                for name, reports in (("ours", ours_reports), ("presidio", theirs or {}))
            }, out, indent=2)
    problems = failures(ours_reports["held-out"])
    for problem in problems:
        print(f"TARGET MISSED (held-out): {problem}")
    print("all targets met on the held-out split" if not problems else f"{len(problems)} target(s) missed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
