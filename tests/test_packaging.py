"""Packaging and entry points: what `pip install` builds, and the CLI started either way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from maskrcnn_deploy.runtime.exit_codes import EXIT_BAD_INPUT

ROOT = Path(__file__).resolve().parents[1]


def test_build_lists_every_folder_it_ships(tmp_path):
    """setuptools' build_py (what `pip install` runs) warns "Package would be ignored" for each importable
    folder that holds shipped files but is not in `packages`; runtime/schemas and plugins/tensorrt were."""
    env = dict(os.environ, MASKRCNN_DEPLOY_CUDA="0")
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "-d", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Package would be ignored" not in proc.stdout + proc.stderr
    shipped = {p.relative_to(tmp_path / "maskrcnn_deploy").as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    for name in ("runtime/schemas/parity_report.v1.schema.json", "plugins/roi_align/roi_align_math.h",
                 "plugins/tensorrt/CMakeLists.txt", "plugins/tensorrt/plugin_library.cpp",
                 "plugins/tensorrt/harness/plugin_harness.cpp", "runtime/cli.py"):
        assert name in shipped, name


def test_python_dash_m_cli_exits_like_the_script(tmp_path):
    """`python -m maskrcnn_deploy.runtime.cli` runs cli.py as __main__, a second copy of the module; a usage
    error raised by another command module (cli_bench) must still be exit 2 with one line, not 4."""
    (tmp_path / "x.onnx").write_bytes(b"")
    (tmp_path / "data").mkdir()
    args = ["bench", "--max-images", "0", "--data", str(tmp_path / "data"), str(tmp_path / "x.onnx")]
    as_module = subprocess.run([sys.executable, "-m", "maskrcnn_deploy.runtime.cli", *args], capture_output=True,
                               text=True, timeout=300)
    script = Path(sys.executable).with_name("maskrcnn-deploy")
    as_script = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=300)
    for proc in (as_module, as_script):
        assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines() == ["maskrcnn-deploy: error: --max-images must be at least 1, got 0"], proc.stderr
