from __future__ import annotations

import pytest

from services.redactor.posture import Posture, PostureBook, parse_posture
from shared.pii import build_engine


class Built:
    def __init__(self, kinds: frozenset[str] | None) -> None:
        if kinds and "NOPE" in kinds:
            raise ValueError("no recognizer for NOPE")
        self.kinds = kinds

    def redact_text(self, text: str) -> object:
        return text

    def redact_json_text(self, text: str) -> object:
        return text


def test_tenant_without_posture_gets_every_category() -> None:
    book = PostureBook(Built, globally_enabled=True)
    engine = book.engine_for("t1")
    assert isinstance(engine, Built) and engine.kinds is None


def test_posture_categories_choose_the_engine_and_equal_postures_share_it() -> None:
    book = PostureBook(Built, globally_enabled=True)
    book.replace({"a": Posture(True, {"EMAIL": "warn"}), "b": Posture(True, {"EMAIL": "block"})})
    first, second = book.engine_for("a"), book.engine_for("b")
    assert isinstance(first, Built) and first.kinds == frozenset({"EMAIL"})
    assert first is second


@pytest.mark.parametrize(
    ("globally", "posture"),
    [(False, None), (True, Posture(False, {"EMAIL": "redact"})), (True, Posture(True, {"NOPE": "redact"}))],
    ids=["switched-off", "tenant-disabled", "unknown-category"],
)
def test_detection_unavailable_means_no_engine(globally: bool, posture: Posture | None) -> None:
    book = PostureBook(Built, globally_enabled=globally)
    if posture:
        book.replace({"t": posture})
    assert book.engine_for("t") is None


@pytest.mark.parametrize("categories", [[], {"EMAIL": "shout"}, "not json"])
def test_invalid_postures_are_refused(categories: object) -> None:
    with pytest.raises(ValueError):
        parse_posture(True, categories)


def test_person_is_a_posture_category_like_any_other() -> None:
    book = PostureBook(build_engine, globally_enabled=True)
    book.replace({"names": Posture(True, {"PERSON": "redact"}), "no-names": Posture(True, {"EMAIL": "redact"})})
    with_names, without_names = book.engine_for("names"), book.engine_for("no-names")
    assert with_names is not None and without_names is not None
    text = "Please ask Hans Müller to mail hans@example.com"
    assert with_names.redact_text(text).text == "Please ask <PERSON> to mail hans@example.com"
    assert without_names.redact_text(text).text == "Please ask Hans Müller to mail <EMAIL>"
