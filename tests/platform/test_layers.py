"""The import rules between layers: import-linter's contracts, and what the Triton models import.

``make lint`` runs ``lint-imports`` (contracts in pyproject.toml); this test runs it too, so a
broken layer fails the suite. The Triton models are no importable package (their directories are
version numbers), so their imports are read from the source: they may use only the domain
package ``secml`` and third-party libraries, never a service (``serving``, ``training``, ``ui``).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from secml.settings import ROOT

SERVICE_PACKAGES = {"serving", "training", "ui", "demo", "bench"}


def _imported_roots(path: Path) -> set[str]:
    """Top-level names a module imports (absolute imports only)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_import_contracts_are_kept() -> None:
    """Every import-linter contract in pyproject.toml is kept."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is missing: `pip install -r requirements.lock` installs it")
    res = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_imported_roots_sees_service_imports(tmp_path: Path) -> None:
    """The reader finds ``from serving.x import y`` and ``import training.z`` (it can fail)."""
    f = tmp_path / "model.py"
    f.write_text("import json\nfrom serving.repository import A\nimport training.flow as t\n")
    assert _imported_roots(f) == {"json", "serving", "training"}


def test_triton_models_import_only_domain_code() -> None:
    """No Triton model imports a service package: the model environment holds only ``secml``."""
    models = sorted((ROOT / "triton_models").glob("*/*/model.py"))
    assert models, "no Triton models found"
    bad = {str(m.relative_to(ROOT)): sorted(_imported_roots(m) & SERVICE_PACKAGES) for m in models}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"Triton models import service packages: {bad}"
