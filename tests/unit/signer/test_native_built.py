"""The signer's compiled paths are built where they are meant to be: CI installs the package, whose setup.py
builds them, so there each must be in use unless ``AUDIT_PURE_PYTHON=1`` says the pure-Python path is meant
(then none is). A checkout where they were not built runs the Python paths alone and says so here; the
comparisons of each compiled path with its Python definition skip there (test_native_decode,
test_native_chain, tests/integration/signer/test_native_copy)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

import pytest

from services.signer import appender, rows
from services.signer.rows import PURE_PYTHON_MEANT

IN_CI = os.environ.get("CI", "") not in ("", "0", "false")

# Each compiled module, the function of it the signer uses, and where the signer holds that function.
_PATHS: dict[str, tuple[str, Callable[[], object]]] = {
    "services.signer._native_rows": ("decode", lambda: rows.decode_usual_row),
    "services.signer._native_chain": ("chain_plain", lambda: appender._chain_plain),
    "services.signer._native_copy": ("encode", lambda: appender._encode_copy),
}


@pytest.mark.parametrize("module_name", sorted(_PATHS))
def test_the_compiled_path_is_in_use_in_ci_unless_the_pure_python_path_is_meant(module_name: str) -> None:
    function_name, in_use = _PATHS[module_name]
    if PURE_PYTHON_MEANT:
        assert in_use() is None
    elif IN_CI:
        module = importlib.import_module(module_name)  # the import itself is half the test
        assert in_use() is getattr(module, function_name)
    elif in_use() is None:
        pytest.skip(f"{module_name} is not built in this checkout: the Python path runs alone")
