"""How a benchmark hands over its figures: the full report as JSON, then the summary a person reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def publish(report: dict[str, Any], summary: str, json_path: Path | None) -> None:
    text = json.dumps(report, indent=2)
    if json_path:
        json_path.write_text(text)
    print(text)
    print()
    print(summary)
