"""The import rules in pyproject.toml ([tool.importlinter]) hold, name every service, and catch a violation.

The last point is proved on a throwaway tree with the project's own contracts: a service importing another, and
shared/ importing a service, must each make ``lint-imports`` fail, so the check in ``make lint`` is not vacuous.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _importlinter_config() -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return config


def _contract(contract_id: str) -> dict[str, Any]:
    return next(c for c in _importlinter_config()["contracts"] if c["id"] == contract_id)


def _service_folders() -> set[str]:
    return {p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()}


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root,
                          env=env, capture_output=True, text=True, check=False, timeout=120)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value) + '"'


def _write_config(root: Path) -> None:
    """The project's own [tool.importlinter] section, rewritten into the throwaway tree."""
    config = _importlinter_config()
    lines = ["[tool.importlinter]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in config.items() if key != "contracts"]
    for contract in config["contracts"]:
        lines.append("[[tool.importlinter.contracts]]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in contract.items()]
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """services/<every real service>/ and shared/, importing nothing of each other yet."""
    for package in ["services", "shared", *(f"services/{name}" for name in _service_folders())]:
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "shared" / "library.py").write_text("VALUE = 1\n")
    for name in _service_folders():
        (tmp_path / "services" / name / "main.py").write_text("from shared.library import VALUE\n")
    _write_config(tmp_path)
    return tmp_path


def test_the_project_keeps_its_layers() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_independence_contract_names_every_service_folder() -> None:
    listed = {module.removeprefix("services.") for module in _contract("services-independent")["modules"]}
    assert listed == _service_folders(), "add the new folder under services/ to [tool.importlinter] in pyproject.toml"


def test_a_tree_that_keeps_the_rules_passes(tree: Path) -> None:
    result = _lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_service_importing_another_fails(tree: Path) -> None:
    (tree / "services" / "reporter" / "leak.py").write_text("from services.receiver import main\n")
    result = _lint_imports(tree)
    assert result.returncode != 0
    assert "services.reporter is not allowed to import services.receiver" in result.stdout


def test_the_operator_tool_importing_a_service_fails(tree: Path) -> None:
    (tree / "services" / "auditctl" / "leak.py").write_text("import services.redactor.main\n")
    result = _lint_imports(tree)
    assert result.returncode != 0
    assert "services.auditctl is not allowed to import services.redactor" in result.stdout


def test_shared_importing_a_service_fails(tree: Path) -> None:
    (tree / "shared" / "leak.py").write_text("from services.signer import main\n")
    result = _lint_imports(tree)
    assert result.returncode != 0
    assert "shared.leak -> services.signer" in result.stdout
