from __future__ import annotations

import pytest

from services.reporter.settings import ReporterSettings
from services.usage.settings import UsageSettings
from shared.settings import load_settings


def test_defaults_and_frozen() -> None:
    settings = ReporterSettings()
    assert settings.reporter_port == 8080
    with pytest.raises(Exception, match="frozen"):
        settings.reporter_port = 1
    assert UsageSettings().usage_group_id == "audit-usage"


def test_inconsistent_or_bad_settings_stop_the_process(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REPORTER_PAGE_SIZE", "900")
    with pytest.raises(SystemExit) as stopped:
        load_settings(ReporterSettings)
    assert stopped.value.code == 2
    assert "REPORTER_MAX_PAGE_SIZE" in capsys.readouterr().err
    monkeypatch.delenv("REPORTER_PAGE_SIZE")
    monkeypatch.setenv("USAGE_MAX_BATCH_MESSAGES", "0")
    with pytest.raises(SystemExit):
        load_settings(UsageSettings)
