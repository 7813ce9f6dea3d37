"""The Dockerfile: parsed with BuildKit's own parser, linted by hadolint, and every service target's
entrypoint is the console script that runs that service's real ``python -m services.X``."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest

from tests.deploy.conftest import ROOT, service_modules

SERVICE_TARGETS = {"receiver", "redactor", "signer", "usage", "reporter"}


def _stages() -> dict[str, list[dockerfile.Command]]:
    stages: dict[str, list[dockerfile.Command]] = {}
    current: list[dockerfile.Command] = []
    for command in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if command.cmd.upper() == "FROM":
            current = []
            values = [v for v in command.value]
            name = values[2] if len(values) >= 3 and values[1].upper() == "AS" else values[0]
            stages[name] = current
        current.append(command)
    return stages


def _inherited(stages: dict[str, list[dockerfile.Command]], name: str, instruction: str) -> dockerfile.Command | None:
    """The last ``instruction`` in stage ``name`` or in the stages it is built FROM."""
    while name in stages:
        found = [c for c in stages[name] if c.cmd.upper() == instruction]
        if found:
            return found[-1]
        name = stages[name][0].value[0]
    return None


def test_hadolint_finds_no_error_or_warning() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_slim_and_non_root() -> None:
    stages = _stages()
    assert {"build", "runtime", *SERVICE_TARGETS, "auditctl"} <= set(stages)
    assert list(stages)[-1] == "auditctl"  # the default target is the operator image, not a service
    for name in [*SERVICE_TARGETS, "auditctl", "runtime"]:
        user = _inherited(stages, name, "USER")
        assert user is not None and user.value[0].split(":")[0] not in ("0", "root"), name
        assert user.value[0].split(":")[0].isdigit(), "numeric uid, so runAsNonRoot can verify it"
    arg = next(c for c in dockerfile.parse_file(str(ROOT / "Dockerfile")) if c.cmd.upper() == "ARG")
    assert "slim" in arg.value[0]
    copies = [c for c in stages["runtime"] if c.cmd.upper() == "COPY"]
    assert all("--from=build" in c.flags for c in copies), "the runtime stage takes only the built venv"


@pytest.mark.parametrize("service", sorted(SERVICE_TARGETS | set(service_modules())))
def test_each_service_target_runs_the_services_real_command(service: str, console_scripts: dict[str, str]) -> None:
    stages = _stages()
    has_module = (ROOT / "services" / service / "__main__.py").exists()
    if not has_module:
        pytest.skip(f"services/{service} is not in the repository yet; its target is ready for it")
    assert service in stages, f"Dockerfile has no target for services/{service}"
    entrypoint = _inherited(stages, service, "ENTRYPOINT")
    assert entrypoint is not None and entrypoint.json, f"{service}: exec-form ENTRYPOINT"
    script = entrypoint.value[0]
    assert script in console_scripts, (
        f"{service}: the image runs {script}, which [project.scripts] lacks; add"
        f' {script} = "services.{service}.__main__:main" to pyproject.toml')
    module, function = console_scripts[script].split(":")
    assert module == f"services.{service}.__main__", "the same code as `python -m services.X`"
    assert callable(getattr(importlib.import_module(module), function))


def test_operator_target_runs_auditctl(console_scripts: dict[str, str]) -> None:
    entrypoint = _inherited(_stages(), "auditctl", "ENTRYPOINT")
    assert entrypoint is not None and entrypoint.value[0] == "auditctl"
    assert console_scripts["auditctl"] == "services.auditctl.__main__:main"


def test_build_context_excludes_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ignored[0] == "*" or "*" in ignored  # allow-list: only what the image needs
    assert {"!pyproject.toml", "!setup.py", "!shared/", "!services/"} <= set(ignored)  # setup.py: compiled modules
    assert "**/*.so" in ignored  # modules compiled for the host stay out; the build stage compiles its own
