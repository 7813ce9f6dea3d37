from __future__ import annotations

import pytest

from shared.pii import PiiEngine
from tests.unit.pii.conftest import found

POSITIVES = [
    ("reach me at jane.roe@example.com today", "jane.roe@example.com"),
    ("cc first.last+billing@mail.example.co.id, please", "first.last+billing@mail.example.co.id"),
    ("From: JOHN_doe@Example.ORG", "JOHN_doe@Example.ORG"),
    ("mailto:ops@corp.example", "ops@corp.example"),
    ('{"to":"ana@example.fr"}', "ana@example.fr"),
]
NEGATIVES = [
    "npm install lodash@4.17.21",
    "import type { Node } from '@types/node'",
    "ssh deploy@localhost",
    "@dataclass(frozen=True)",
    "user@host.c0m is not a domain",
    "git@ alone",
    "anthropic-ai/claude-code@2.1.332",
]


@pytest.mark.parametrize(("text", "email"), POSITIVES)
def test_email_is_found(engine: PiiEngine, text: str, email: str) -> None:
    assert ("EMAIL", email) in found(engine, text)


@pytest.mark.parametrize("text", NEGATIVES)
def test_not_an_email(engine: PiiEngine, text: str) -> None:
    assert all(kind != "EMAIL" for kind, _ in found(engine, text))
