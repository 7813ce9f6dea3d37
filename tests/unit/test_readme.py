from __future__ import annotations

from pathlib import Path

from deploy.local.settings_table import with_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_settings_table_matches_the_settings_classes() -> None:
    text = README.read_text()
    assert with_table(text) == text, "run: python -m deploy.local.settings_table --write README.md"


def test_readme_shows_the_two_commands() -> None:
    text = README.read_text()
    assert "make run" in text and "make test" in text
