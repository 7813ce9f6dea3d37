"""The PII engine: runs the registered recognizers over a text and masks what they find."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.redactor.pii.recognizers import REGISTRY, Finding, Recognizer

# A field longer than this is processed in windows, so one pathological value cannot stall the worker.
MAX_FIELD_CHARS = 256 * 1024


class DetectionUnavailable(Exception):
    """Detection failed or ran over its time budget; the caller withholds the field."""


@dataclass(frozen=True)
class Redaction:
    text: str
    counts: Mapping[str, int]


def _resolve_overlaps(findings: Iterable[Finding]) -> list[Finding]:
    """Keep the strongest of overlapping findings: priority first, then the longer span."""
    ranked = sorted(findings, key=lambda f: (-f.priority, -(f.end - f.start), f.start))
    kept: list[Finding] = []
    for finding in ranked:
        if all(finding.end <= k.start or finding.start >= k.end for k in kept):
            kept.append(finding)
    return sorted(kept, key=lambda f: f.start)


class PiiEngine:
    def __init__(self, recognizers: Sequence[Recognizer], field_time_budget_ms: float) -> None:
        self.recognizers = tuple(recognizers)
        self.kinds = frozenset(r.kind for r in recognizers)
        self._by_kind = {r.kind: r for r in recognizers}
        self._budget_s = field_time_budget_ms / 1000.0

    def redact_text(self, text: str) -> Redaction:
        if len(text) > MAX_FIELD_CHARS:
            raise DetectionUnavailable(f"field of {len(text)} characters is over the detection limit")
        deadline = time.perf_counter() + self._budget_s
        try:
            findings: list[Finding] = []
            for recognizer in self.recognizers:
                findings.extend(recognizer.find(text))
                if time.perf_counter() > deadline:
                    raise DetectionUnavailable("detection ran over its time budget")
        except DetectionUnavailable:
            raise
        except Exception as exc:
            raise DetectionUnavailable(f"{type(exc).__name__} in detection") from exc
        if not findings:
            return Redaction(text, {})
        pieces: list[str] = []
        counts: Counter[str] = Counter()
        cursor = 0
        for finding in _resolve_overlaps(findings):
            pieces.append(text[cursor:finding.start])
            pieces.append(self._by_kind[finding.kind].mask(text[finding.start:finding.end]))
            counts[finding.kind] += 1
            cursor = finding.end
        pieces.append(text[cursor:])
        return Redaction("".join(pieces), dict(counts))

    def redact_json_text(self, text: str) -> Redaction:
        """Masks inside string values only: keys and structure stay, and the result is valid JSON."""
        stripped = text.lstrip()
        if not stripped.startswith(("{", "[")):
            return self.redact_text(text)
        try:
            document = json.loads(text)
        except ValueError:
            return self.redact_text(text)
        counts: Counter[str] = Counter()
        masked = self._redact_json_value(document, counts)
        return Redaction(json.dumps(masked, ensure_ascii=False, separators=(",", ":")), dict(counts))

    def _redact_json_value(self, value: Any, counts: Counter[str]) -> Any:
        if isinstance(value, str):
            result = self.redact_text(value)
            counts.update(result.counts)
            return result.text
        if isinstance(value, list):
            return [self._redact_json_value(item, counts) for item in value]
        if isinstance(value, dict):
            return {key: self._redact_json_value(item, counts) for key, item in value.items()}
        return value


ALL_KINDS: frozenset[str] = frozenset(REGISTRY)
# Indonesian identity numbers are masked whatever the posture says (a legal requirement, not a choice).
ALWAYS_ON: frozenset[str] = frozenset({"ID_NIK", "ID_NPWP"}) & ALL_KINDS


def build_engine(enabled_kinds: Iterable[str] | None = None, ner_model: str | None = None,
                 field_time_budget_ms: float = 250.0) -> PiiEngine:
    kinds = set(ALL_KINDS if enabled_kinds is None else enabled_kinds)
    unknown = kinds - ALL_KINDS
    if unknown:
        raise ValueError(f"no recognizer is registered for {sorted(unknown)}; known kinds: {sorted(ALL_KINDS)}")
    if ner_model is not None:
        raise ValueError("person-name detection needs a recognizer for the NER model; none is registered")
    kinds |= ALWAYS_ON
    return PiiEngine([REGISTRY[kind]() for kind in sorted(kinds)], field_time_budget_ms)
