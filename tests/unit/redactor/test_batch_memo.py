"""A batch's repeated short texts (resource.* and the like) are scanned once, with the engine's own answer."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from shared.canonicalize.transform import BatchMemo


@dataclass
class _Result:
    text: str
    counts: dict[str, int] = field(default_factory=dict)


class _CountingEngine:
    def __init__(self) -> None:
        self.scans: list[str] = []
        self.fail_next = False

    def redact_text(self, text: str) -> _Result:
        self.scans.append(text)
        if self.fail_next:
            self.fail_next = False
            raise TimeoutError("over budget")
        return _Result(text.replace("jane@example.com", "<EMAIL>"), {"EMAIL": text.count("jane@example.com")})

    def redact_json_text(self, text: str) -> _Result:
        self.scans.append("json:" + text)
        return _Result(text)


def test_a_repeated_short_text_is_scanned_once_per_batch() -> None:
    engine = _CountingEngine()
    memo = BatchMemo(engine)
    first = memo.redact_text("host of jane@example.com")
    again = memo.redact_text("host of jane@example.com")
    assert again is first and first.text == "host of <EMAIL>" and first.counts == {"EMAIL": 1}
    memo.redact_json_text("host of jane@example.com")  # JSON scanning is a different answer: scanned apart
    assert engine.scans == ["host of jane@example.com", "json:host of jane@example.com"]
    assert BatchMemo(engine).redact_text("host of jane@example.com").text == "host of <EMAIL>"
    assert len(engine.scans) == 3  # a new batch starts with nothing remembered


def test_long_texts_and_failed_scans_are_not_remembered() -> None:
    engine = _CountingEngine()
    memo = BatchMemo(engine)
    long_text = "x" * (BatchMemo.MAX_TEXT + 1)
    memo.redact_text(long_text)
    memo.redact_text(long_text)
    assert engine.scans.count(long_text) == 2
    engine.fail_next = True
    with pytest.raises(TimeoutError):
        memo.redact_text("user.name")
    assert memo.redact_text("user.name").text == "user.name"
    assert engine.scans.count("user.name") == 2


def test_a_field_scanned_clean_is_remembered_as_clean_and_others_are_not() -> None:
    engine = _CountingEngine()
    memo = BatchMemo(engine)
    assert memo.redact_field("xterm", as_json=False) == ("xterm", {})
    assert memo.redact_field("host of jane@example.com", as_json=False) == ("host of <EMAIL>", {"EMAIL": 1})
    memo.redact_field("xterm", as_json=False)
    assert engine.scans.count("xterm") == 1
    assert "xterm" in memo.clean and "host of jane@example.com" not in memo.clean
    engine.fail_next = True
    with pytest.raises(TimeoutError):
        memo.redact_field("user.name", as_json=False)
    assert "user.name" not in memo.clean  # a scan that raised is neither remembered nor clean


def test_short_texts_found_clean_are_remembered_across_batches_for_their_engine_only() -> None:
    engine, other = _CountingEngine(), _CountingEngine()
    for _ in range(3):
        memo = BatchMemo(engine)
        assert memo.redact_field("xterm", as_json=False) == ("xterm", {})
        assert memo.redact_field("host of jane@example.com", as_json=False) == ("host of <EMAIL>", {"EMAIL": 1})
        assert "xterm" in memo.clean
    assert engine.scans.count("xterm") == 1
    assert engine.scans.count("host of jane@example.com") == 3  # nothing of a text with findings is kept
    assert "xterm" not in BatchMemo(other).clean  # another posture's engine answers for itself
    BatchMemo(other).redact_field("xterm", as_json=False)
    assert other.scans == ["xterm"]
