"""Prints the README's settings table from the settings classes themselves, so the two cannot drift.

Usage: python -m deploy.local.settings_table [--write README.md]
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from pydantic_settings import BaseSettings

from shared.settings import CommonSettings

SETTINGS_CLASSES = (
    ("all services", "shared.settings", "CommonSettings"),
    ("receiver", "services.receiver.settings", "ReceiverSettings"),
    ("redactor", "services.redactor.settings", "RedactorSettings"),
    ("signer", "services.signer.settings", "SignerSettings"),
    ("auditctl", "services.auditctl.settings", "CliSettings"),
    ("reporter", "services.reporter.settings", "ReporterSettings"),
    ("usage", "services.usage.settings", "UsageSettings"),
    ("auditctl ops", "services.auditctl.ops.settings", "OpsSettings"),
)


def settings_rows() -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()
    for scope, module, name in SETTINGS_CLASSES:
        try:
            cls: type[BaseSettings] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        for field_name, info in cls.model_fields.items():
            if field_name in seen or (cls is not CommonSettings and field_name in CommonSettings.model_fields):
                continue
            seen.add(field_name)
            default = json.dumps(info.default) if not isinstance(info.default, str) else info.default
            rows.append((field_name.upper(), scope, default, info.description or ""))
    return rows


def markdown() -> str:
    lines = ["| variable | used by | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {scope} | `{d}` | {desc} |" for n, scope, d, desc in settings_rows()]
    return "\n".join(lines)


START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def with_table(readme: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{markdown()}\n{END}{tail}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        path = Path(sys.argv[2])
        path.write_text(with_table(path.read_text()))
    else:
        print(markdown())
