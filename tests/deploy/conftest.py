"""Deployment validation needs neither Docker nor a cluster: see the dev extra in pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def console_scripts() -> dict[str, str]:
    """``[project.scripts]``: console script name -> ``module:function``."""
    scripts: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return scripts


def service_modules() -> list[str]:
    """Every service the repository has: a package under services/ with a ``__main__``."""
    return sorted(p.parent.name for p in (ROOT / "services").glob("*/__main__.py"))
