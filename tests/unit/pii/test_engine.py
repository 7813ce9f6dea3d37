"""The engine around the recognizers: JSON masking, always-on kinds, unknown kinds, the time budget,
overlaps and counts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from shared.pii import ALL_KINDS, ALWAYS_ON, DetectionUnavailable, PiiEngine, Redaction, build_engine
from shared.pii import engine as engine_module
from shared.pii.engine import MAX_FIELD_CHARS
from shared.pii.recognizers import REGISTRY, Finding, TextScan


def test_every_required_kind_is_registered() -> None:
    required = {"EMAIL", "PHONE", "CARD", "IBAN", "US_SSN", "IP_ADDRESS", "ID_NIK", "ID_NPWP", "SECRET", "PERSON"}
    assert required <= ALL_KINDS
    assert sorted(ALWAYS_ON) == ["ID_NIK", "ID_NPWP"]


def test_a_text_with_everything_is_masked_with_typed_placeholders(engine: PiiEngine) -> None:
    text = (
        "mail jane.roe@example.com, call +1 415 555 0134, card 4111 1111 1111 1111, IBAN DE89370400440532013000, "
        "SSN 078-05-1120, host 10.0.0.1, NIK 3174012304850001, NPWP 01.312.166.0-091.000, password=hunter2"
    )
    result = engine.redact_text(text)
    assert result.text == (
        "mail <EMAIL>, call <PHONE>, card <CARD>, IBAN <IBAN>, SSN <US_SSN>, host <IP_ADDRESS>, "
        "NIK 31**********0001, NPWP 01.***.***.*-**1.000, password=<SECRET>"
    )
    assert result.counts == {
        "EMAIL": 1, "PHONE": 1, "CARD": 1, "IBAN": 1, "US_SSN": 1, "IP_ADDRESS": 1, "ID_NIK": 1, "ID_NPWP": 1,
        "SECRET": 1,
    }


def test_text_without_pii_comes_back_unchanged(engine: PiiEngine) -> None:
    text = "Refactor the billing module; keep v2.1.332 compatible; see 9c82ae41-69ad-4e74-85a8-70cc8c88f69c."
    assert engine.redact_text(text) == Redaction(text, {})


def test_masking_twice_changes_nothing_more(engine: PiiEngine) -> None:
    once = engine.redact_text("NIK 3174012304850001 mail a@example.com token=abc123XYZ")
    assert engine.redact_text(once.text) == Redaction(once.text, {})


def test_json_keeps_structure_and_masks_values_and_keys(engine: PiiEngine) -> None:
    document = {
        "command": "psql postgres://app:s3cr3t@db:5432/x -c \"select 1\"",
        "customer": {"email": "ana@example.fr", "phones": ["+33 6 12 34 56 78"], "nik": 3174012304850001},
        "password": "hunter2",
        "count": 3,
        "ok": True,
        "none": None,
        "jane@example.com": "a key is scanned too",
    }
    result = engine.redact_json_text(json.dumps(document))
    masked = json.loads(result.text)
    assert masked == {
        "command": "psql postgres://app:<SECRET>@db:5432/x -c \"select 1\"",
        "customer": {"email": "<EMAIL>", "phones": ["<PHONE>"], "nik": "31**********0001"},
        "password": "<SECRET>",
        "count": 3,
        "ok": True,
        "none": None,
        "<EMAIL>": "a key is scanned too",
    }
    assert result.counts == {"SECRET": 2, "EMAIL": 2, "PHONE": 1, "ID_NIK": 1}


@pytest.mark.parametrize(
    "text", ["not json jane@example.com", "{broken json jane@example.com", '"a JSON string, jane@example.com"']
)
def test_json_that_is_not_an_object_is_scanned_as_text(engine: PiiEngine, text: str) -> None:
    assert engine.redact_json_text(text).text == text.replace("jane@example.com", "<EMAIL>")


def test_unknown_kind_is_refused_at_build_time() -> None:
    with pytest.raises(ValueError, match="no recognizer is registered for \\['NOPE'\\]"):
        build_engine(["EMAIL", "NOPE"])


def test_posture_kinds_choose_the_recognizers_and_always_on_ones_are_added() -> None:
    engine = build_engine(["EMAIL"])
    assert engine.kinds == {"EMAIL", "ID_NIK", "ID_NPWP"}
    assert engine.redact_text("card 4111 1111 1111 1111, NIK 3174012304850001").text == (
        "card 4111 1111 1111 1111, NIK 31**********0001"
    )


class _Slow:
    kind = "SLOW"
    placeholder = "<SLOW>"

    def may_contain(self, scan: TextScan) -> bool:
        return True

    def find(self, scan: TextScan) -> Iterator[Finding]:
        time.sleep(0.05)
        yield from ()

    def mask(self, value: str) -> str:
        return self.placeholder


class _Broken(_Slow):
    def find(self, scan: TextScan) -> Iterator[Finding]:
        raise RuntimeError("bug in a recognizer")


def test_running_over_the_time_budget_makes_detection_unavailable() -> None:
    engine = PiiEngine([REGISTRY["EMAIL"](), _Slow()], field_time_budget_ms=10)
    with pytest.raises(DetectionUnavailable, match="time budget"):
        engine.redact_text("a text long enough to be scanned")
    with pytest.raises(DetectionUnavailable):
        engine.redact_json_text('{"a": "a text long enough to be scanned"}')


def test_a_failing_recognizer_makes_detection_unavailable() -> None:
    engine = PiiEngine([_Broken()], field_time_budget_ms=250)
    with pytest.raises(DetectionUnavailable, match="RuntimeError"):
        engine.redact_text("a text long enough to be scanned")


def test_an_oversized_field_is_not_scanned(engine: PiiEngine) -> None:
    with pytest.raises(DetectionUnavailable, match="over the detection limit"):
        engine.redact_text("x" * (MAX_FIELD_CHARS + 1))


def test_overlaps_keep_the_stronger_finding(engine: PiiEngine) -> None:
    # The URL's password and the "e-mail" it seems to start are the same characters: the password wins and
    # the host stays readable.
    assert engine.redact_text("postgres://u:p4ss@db.example.com/x").text == "postgres://u:<SECRET>@db.example.com/x"
    # An IPv4 address inside an IPv6 one is one address.
    assert engine.redact_text("::ffff:192.0.2.128").counts == {"IP_ADDRESS": 1}


def test_short_values_are_remembered_not_rescanned(engine: PiiEngine) -> None:
    first = engine.redact_text("a@example.com")
    assert engine.redact_text("a@example.com") == first == Redaction("<EMAIL>", {"EMAIL": 1})


class _Counting:
    """Finds "SECRET-WORD" and counts the texts it was asked to scan."""

    kind = "WORD"
    placeholder = "<WORD>"

    def __init__(self) -> None:
        self.scanned: list[str] = []

    def may_contain(self, scan: TextScan) -> bool:
        return True

    def find(self, scan: TextScan) -> Iterator[Finding]:
        self.scanned.append(scan.text)
        at = scan.text.find("SECRET-WORD")
        if at >= 0:
            yield Finding(at, at + len("SECRET-WORD"), self.kind)

    def mask(self, value: str) -> str:
        return self.placeholder


def test_long_texts_are_remembered_and_texts_with_findings_only_by_a_keyed_digest() -> None:
    counting = _Counting()
    engine = PiiEngine([counting], field_time_budget_ms=250)
    clean = "Refactor the billing module so invoices come from the ledger, keep the API stable. " * 3
    dirty = clean + "SECRET-WORD"
    for _ in range(3):
        assert engine.redact_text(clean) == Redaction(clean, {})
        assert engine.redact_text(dirty) == Redaction(clean + "<WORD>", {"WORD": 1})
    assert counting.scanned.count(clean) == 1
    assert counting.scanned.count(dirty) == 2  # the first sighting leaves only a hash: unique texts pay no digest
    # No copy of a text with findings is kept: only a digest keyed with a secret of this process.
    remembered = [text for _, text in engine._clean] + [text for _, text in engine._memo]
    assert dirty not in remembered
    kept = [entry for entry in engine._found.values() if entry is not None]
    assert all(isinstance(digest, bytes) and len(digest) == 32 for digest, _ in kept)
    assert engine._digest(dirty, None) in [digest for digest, _ in kept]
    other = PiiEngine([counting], field_time_budget_ms=250)
    assert other._digest(dirty, None) != engine._digest(dirty, None)  # keyed per engine
    # Under a JSON key it is another text: scanned again, and remembered apart.
    for _ in range(3):
        engine.redact_json_text(json.dumps({"note": dirty}))
    assert counting.scanned.count(dirty) == 4
    assert len(engine._found) == 2
    # The JSON key a value came under is part of what was found clean: under another key it is scanned again.
    engine.redact_json_text(json.dumps({"note": clean}))
    engine.redact_json_text(json.dumps({"note": clean}))
    assert counting.scanned.count(clean) == 2


def test_the_memory_of_clean_texts_is_bounded_in_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "_CLEAN_MEMO_CHARS", 1000)
    counting = _Counting()
    engine = PiiEngine([counting], field_time_budget_ms=250)
    texts = [f"text number {n} " + "x" * 100 for n in range(30)]
    for text in texts:
        engine.redact_text(text)
    assert counting.scanned == texts
    # The most recent ones are answered from memory, the oldest were forgotten: at most 1000 characters kept.
    counting.scanned.clear()
    for text in reversed(texts):
        engine.redact_text(text)
    remembered = [text for text in reversed(texts) if text not in counting.scanned]
    assert 0 < sum(map(len, remembered)) <= 1000
    assert remembered == list(reversed(texts))[: len(remembered)]
    # A text longer than the longest remembered is scanned every time.
    monkeypatch.setattr(engine_module, "_CLEAN_MAX_TEXT", 100)
    counting.scanned.clear()
    engine.redact_text("y" * 120)
    engine.redact_text("y" * 120)
    assert counting.scanned == ["y" * 120, "y" * 120]


def test_the_memory_of_texts_with_findings_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "_FOUND_ENTRIES", 5)
    counting = _Counting()
    engine = PiiEngine([counting], field_time_budget_ms=250)
    texts = [f"text number {n} with a SECRET-WORD in it, long enough to be past the short-text memory" for n in range(12)]
    for text in texts:
        for _ in range(2):  # a text's findings are kept from its second sighting on
            assert engine.redact_text(text).counts == {"WORD": 1}
    assert 0 < len(engine._found) <= 5
    counting.scanned.clear()
    engine.redact_text(texts[-1])
    assert counting.scanned == []  # the latest is remembered
    engine.redact_text(texts[0])
    assert counting.scanned == [texts[0]]  # the earliest was forgotten
