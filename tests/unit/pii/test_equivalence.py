"""The engine's answers over a fixed, broad input set, pinned by their digest.

Speed work on the recognizers (caches, shortcuts, cheaper scans) must not change a single answer: every
finding (span, kind, priority, detail) and every masked text, plain and JSON, for the strings of the real
Claude Code captures, Claude Code-shaped content fields with PII sprinkled in, the labelled corpus and the
outside corpus. The digest was taken before such work; a change that moves it changes what is redacted.
If that is intended (a recall or precision fix), check it with ``make eval-redaction``, then print the new
digest with ``python -m tests.unit.pii.test_equivalence`` and update ``EXPECTED``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from shared import otlp
from shared.pii import PiiEngine, build_engine
from shared.pii.eval.corpus import build_corpus
from shared.pii.eval.outside import build_outside_corpus
from shared.pii.eval.workload import JSON_ATTRIBUTES, realistic_texts
from tests.conftest import DETECTION_BUDGET_FOR_TESTS_MS, FIXTURES

EXPECTED = "56fd3195cfb8dfa2acecf772dfcf5a9d48ff657b353084555d7300e3e89ff4d8"
CAPTURES = ("logs-tool-session.pb", "logs-api-error.pb", "logs-tool-session-nocontent.pb.gz")


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)


def inputs(fixtures_dir: Path) -> list[tuple[bool, str, str | None]]:
    """(as JSON, text, JSON key) for every input, in a fixed order."""
    items: list[tuple[bool, str, str | None]] = []
    for name in CAPTURES:
        data = (fixtures_dir / name).read_bytes()
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        request = otlp.decode_request(data, otlp.Encoding.PROTOBUF, otlp.ExportLogsServiceRequest)
        for rl in request.resource_logs:
            for attribute in rl.resource.attributes:
                items.append((False, attribute.key, None))
                items.append((False, attribute.value.string_value, None))
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    items.append((False, record.body.string_value, None))
                    for attribute in record.attributes:
                        text = attribute.value.string_value
                        items.append((False, text, None))
                        items.append((True, text, None))
    for content in realistic_texts(150, seed=5):
        items.append((content.attribute in JSON_ATTRIBUTES, content.text, None))
    for sample in build_corpus(600, seed=11):
        for labelled in sample.fields:
            items.append((False, labelled.text, labelled.key))
        if sample.json_text is not None:
            items.append((True, sample.json_text, None))
            items.extend((False, text, None) for text in _strings(json.loads(sample.json_text)))
    for outside in build_outside_corpus(400, seed=3):
        items.append((False, outside.text, None))
        items.append((True, outside.text, None))
    return [item for item in items if item[1]]


def answers_digest(engine: PiiEngine, items: list[tuple[bool, str, str | None]]) -> str:
    digest = hashlib.sha256()
    for as_json, text, key in items:
        if as_json:
            redaction = engine.redact_json_text(text)
            answer: list[object] = [redaction.text, sorted(redaction.counts.items())]
        else:
            findings = [[f.start, f.end, f.kind, f.priority, f.detail] for f in engine.find(text, key)]
            masked = engine.redact_text(text) if key is None else None
            answer = [findings, None if masked is None else [masked.text, sorted(masked.counts.items())]]
        digest.update(json.dumps(answer, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def test_answers_are_unchanged(engine: PiiEngine, fixtures_dir: Path) -> None:
    items = inputs(fixtures_dir)
    assert len(items) > 3000
    assert answers_digest(engine, items) == EXPECTED


if __name__ == "__main__":
    everything = inputs(FIXTURES)
    print(len(everything), answers_digest(build_engine(field_time_budget_ms=DETECTION_BUDGET_FOR_TESTS_MS), everything))
