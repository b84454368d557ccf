"""The one-way layers of docs/architecture.md: pyproject.toml's import-linter contracts hold on the tree, every
module is analysed, and a back-edge or an import cycle added to a copy of the tree breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: tomli is locked there (import-linter depends on it)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("common", "plugins", "model", "export", "calibration", "runtime")  # lowest layer first
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _importlinter_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def _lint(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """lint-imports as CI runs it, on the pyproject.toml in cwd; --no-cache writes nothing into the tree."""
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_contracts_hold():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    contracts = _importlinter_config()["contracts"]
    assert f"Contracts: {len(contracts)} kept, 0 broken." in proc.stdout, proc.stdout[-3000:]


def test_contract_names_every_folder_as_a_layer():
    """The layers contract lists the six folders, highest first, and each is a root package of the graph."""
    config = _importlinter_config()
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    expected = [f"maskrcnn_deploy.{name}" for name in reversed(FOLDERS)]
    assert layers["layers"] == expected
    assert sorted(config["root_packages"]) == sorted(expected)


def test_every_python_file_is_analysed():
    """grimp skips a folder without __init__.py (a namespace portion): its modules would escape the contracts."""
    graph = grimp.build_graph(*_importlinter_config()["root_packages"], cache_dir=None)
    files = set()
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files.add(".".join(("maskrcnn_deploy",) + (parts[:-1] if parts[-1] == "__init__" else parts)))
    assert files - set(graph.modules) == set()
    assert len(files) > 50  # the tree, not an empty graph


@pytest.fixture
def tree_copy(tmp_path):
    """The Python files of the six folders under tmp_path/maskrcnn_deploy/ (a namespace package, as installed),
    with pyproject.toml beside them; PYTHONPATH puts the copy ahead of the editable install."""
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            target = tmp_path / "maskrcnn_deploy" / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    shutil.copyfile(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    return tmp_path / "maskrcnn_deploy", env


def test_a_back_edge_breaks_the_layers(tree_copy):
    package, env = tree_copy
    (package / "common" / "back_edge.py").write_text("from maskrcnn_deploy.runtime import load\n")
    proc = _lint(package.parent, env)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "One-way layers (highest first) BROKEN" in proc.stdout, proc.stdout[-3000:]
    assert "maskrcnn_deploy.common.back_edge -> maskrcnn_deploy.runtime" in proc.stdout, proc.stdout[-3000:]


def test_a_module_cycle_breaks_the_acyclic_contract(tree_copy):
    package, env = tree_copy
    (package / "model" / "cycle_a.py").write_text("from maskrcnn_deploy.model import cycle_b\n")
    (package / "model" / "cycle_b.py").write_text("from maskrcnn_deploy.model import cycle_a\n")
    proc = _lint(package.parent, env)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "No import cycles between sibling modules BROKEN" in proc.stdout, proc.stdout[-3000:]
    assert "No cycles are allowed in maskrcnn_deploy.model." in proc.stdout, proc.stdout[-3000:]
    assert "One-way layers (highest first) KEPT" in proc.stdout  # the copy itself is layered
