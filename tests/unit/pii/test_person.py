"""Person names: on by default, from the name gazetteer, context words and the installed spaCy pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy

from shared.pii import PiiEngine, build_engine
from shared.pii.recognizers.person import _capitalised_words
from tests.conftest import DETECTION_BUDGET_FOR_TESTS_MS


@pytest.fixture(scope="module")
def engine() -> PiiEngine:
    return build_engine(field_time_budget_ms=DETECTION_BUDGET_FOR_TESTS_MS)


def test_person_is_on_by_default(engine: PiiEngine) -> None:
    assert "PERSON" in engine.kinds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Please ask Hans Müller about the deploy", "Please ask <PERSON> about the deploy"),
        ("cc: Priya Sharma, thanks", "cc: <PERSON>, thanks"),
        ("Budi Santoso will review the PR", "<PERSON> will review the PR"),
        # Titles are masked with the name they belong to.
        ("Terima kasih Pak Wahyudi Hidayat", "Terima kasih <PERSON>"),
        ("ask Prof. Jörgen Ehlert B.Eng. to review it", "ask <PERSON> to review it"),
        ("Halo Dr. Hana Puspasari, S.H., bisa dicek?", "Halo <PERSON>, bisa dicek?"),
        ("cc Melle van der Sloot-Huijben on the thread", "cc <PERSON> on the thread"),
        ("ini dari R. Endah Wastuti", "ini dari <PERSON>"),
        ("Hallo Dan Schuchhardt, kannst du das prüfen?", "Hallo <PERSON>, kannst du das prüfen?"),
        ("ask Kimberley McCarthy to review it", "ask <PERSON> to review it"),
        ("Bonjour, je suis Jean-Pierre Lefèvre", "Bonjour, je suis <PERSON>"),
        ("Email Jan van den Berg about it", "Email <PERSON> about it"),
        ("Hola, soy María García López", "Hola, soy <PERSON>"),
        ("Sehr geehrte Frau Schneider", "Sehr geehrte <PERSON>"),
        ("Thanks, Siti", "Thanks, <PERSON>"),
    ],
)
def test_names_in_every_locale_are_masked(engine: PiiEngine, text: str, expected: str) -> None:
    assert engine.redact_text(text).text == expected


@pytest.mark.parametrize(
    "text",
    [
        "Fix the React Router bug in Pull Request 12",
        "Please update the Docker Compose file",
        'git commit -m "Fix login for Spring Boot"',
        "Claude Code crashed when I opened /Users/Anna/src",
        "Use Claude Code with the Next.js App Router",
        "Run npm test in the Express Server",
        "from django.contrib.auth import User",
        "class PaymentService extends BaseService",
        "See Grace.hopper() and Mark.down in utils.py",
        "Install Google Chrome on the Mac Mini with Apple Silicon",
        "Use the Rose Pine theme with Victoria Metrics",
        "Add Stripe Checkout and Paypal Express",
        "Error: Connection Refused by Redis Server",
        "Let's ask Claude to refactor it",
        "Deploy to Vercel Edge Functions",
        "Set up Grafana Loki with Promtail and Tempo",
        "Ask Jira Service Desk for access",
        "The Jenkins Pipeline failed at Stage Build",
    ],
)
def test_code_products_and_paths_survive(engine: PiiEngine, text: str) -> None:
    assert engine.redact_text(text).text == text


def test_without_a_model_the_gazetteer_and_context_still_find_names() -> None:
    engine = build_engine(None, None)
    assert engine.redact_text("Hi Hans Müller, see you").text == "Hi <PERSON>, see you"


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # (word, start, end) of each capitalised word or initial, as the run builder reads them.
        ("ask Hans Müller", [("Hans", 4, 8), ("Müller", 9, 15)]),
        ("Jean-Pierre O'Brien", [("Jean-Pierre", 0, 11), ("O'Brien", 12, 19)]),
        ("Jean- Pierre", [("Jean", 0, 4), ("Pierre", 6, 12)]),  # a hyphen with no letter after it ends the word
        ("D'", [("D", 0, 1)]),
        ("ini dari R. Endah", [("R.", 9, 11), ("Endah", 12, 17)]),
        ("R.E.M. and JavaScript", [("R", 0, 1), ("E", 2, 3), ("M.", 4, 6), ("JavaScript", 11, 21)]),
        ("os.Path and abcDef and Ádám", [("Path", 3, 7), ("Ádám", 23, 27)]),
        ("no capitals here", []),
    ],
)
def test_capitalised_words_are_read_with_their_spans(text: str, expected: list[tuple[str, int, int]]) -> None:
    words, starts, ends = _capitalised_words(text)
    assert list(zip(words, starts, ends, strict=True)) == expected
    assert all(text[start:end] == word for word, start, end in expected)


def test_a_json_key_that_names_a_person_is_context_each_time_it_is_seen(engine: PiiEngine) -> None:
    """Keys are read once and remembered: a later document with the same keys is answered by the same rule."""
    for first, second in (("Budi", "Santoso"), ("Siti", "Rahayu")):
        text = json.dumps({"author": f"{first} {second}", "description": first, "reviewerName": second,
                           "assignee": [first], "title": second})
        assert json.loads(engine.redact_json_text(text).text) == {
            "author": "<PERSON>", "description": first, "reviewerName": "<PERSON>", "assignee": ["<PERSON>"],
            "title": second,
        }
