"""Packaging and entry points: what `pip install` builds, and the CLI started either way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from maskrcnn_deploy.runtime.cli.exit_codes import EXIT_BAD_INPUT

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
    for name in ("runtime/schemas/parity_report.v2.schema.json", "plugins/roi_align/roi_align_math.h",
                 "plugins/tensorrt/CMakeLists.txt", "plugins/tensorrt/plugin_library.cpp",
                 "plugins/tensorrt/harness/plugin_harness.cpp", "runtime/cli/__init__.py",
                 "runtime/cli/__main__.py", "runtime/cli/bench.py"):
        assert name in shipped, name


def test_python_dash_m_cli_exits_like_the_script(tmp_path):
    """`python -m maskrcnn_deploy.runtime.cli` runs runtime/cli/__main__.py, the script runs cli.main; a usage
    error raised by a command module (bench) must be exit 2 with one line, not 4, either way."""
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


def _imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at the top or inside functions."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_cli_is_one_thin_module_per_command():
    """runtime/cli/: each command module has add_parser and run, the parser registers exactly them, and no
    command module imports the package or another command (only `train --eval` reuses eval's report)."""
    from maskrcnn_deploy.runtime import cli

    commands = {m.__name__.rsplit(".", 1)[1] for m in cli.COMMANDS}
    files = {p.stem for p in (ROOT / "runtime" / "cli").glob("*.py")} - {"__init__", "__main__", "exit_codes", "checkpoint_options"}
    assert commands == files
    parser = cli.build_parser()
    chosen = {parser.parse_args(argv).func for argv in (["data", "synth", "--out", "x"], ["demo"],
                                                        ["convert", "m.onnx", "-o", "x.onnx"])}
    assert chosen == {cli.data.run, cli.demo.run, cli.convert.run}
    for module in cli.COMMANDS:
        assert callable(module.add_parser) and callable(module.run), module.__name__
        name = module.__name__.rsplit(".", 1)[1]
        imported = _imported_modules(ROOT / "runtime" / "cli" / f"{name}.py")
        others = {f"maskrcnn_deploy.runtime.cli.{c}" for c in commands - {name}} | {"maskrcnn_deploy.runtime.cli"}
        allowed = {"maskrcnn_deploy.runtime.cli.eval"} if name == "train" else set()
        assert not (imported & others) - allowed, (name, imported & others)


def test_demo_and_calibration_call_the_library_not_the_command_line():
    for path in (ROOT / "runtime" / "demo.py", *sorted((ROOT / "calibration").glob("*.py"))):
        imported = _imported_modules(path)
        assert "argparse" not in imported, path
        assert not any(m.startswith("maskrcnn_deploy.runtime.cli") for m in imported), path
    assert not (ROOT / "calibration" / "cli.py").exists()


def test_train_options_default_to_the_library_recipe():
    """`maskrcnn-deploy train` and the demo (CocoTraining defaults) train with the same recipe."""
    from maskrcnn_deploy.model.train_coco import CocoTraining
    from maskrcnn_deploy.runtime.cli import build_parser

    args = build_parser().parse_args(["train", "--data", "d", "--out", "o"])
    recipe = CocoTraining(data="d", out="o")
    for name in ("iterations", "batch_size", "lr", "warmup_iters", "clip_grad", "preset", "checkpoint_every",
                 "workers", "seed", "image_size", "max_size", "init"):
        assert getattr(args, name) == getattr(recipe, name), name
