"""The torch-free runtime (issue 20): `pip install maskrcnn-deploy` alone runs predict, check and bench on ONNX
graphs, and a command that needs a missing extra says which one (exit 3).

The graphs (custom RoIAlign node and standard ops) and the PyTorch-path check are made here, in the full
environment; the commands then run in the runtime-only virtualenv (`make test` and `make test-runtime-only`
create .venv-runtime from requirements/runtime-py3.X.txt and set MASKRCNN_DEPLOY_RUNTIME_PYTHON to its python).
Without that variable these tests skip locally and fail when CI is set. Each command runs through `WRAPPER`,
which calls the CLI's main() and then reports whether torch (or another export-only package) was imported.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maskrcnn_deploy.common.errors import MissingExtraError
from maskrcnn_deploy.common.extras import extra_of, require_extra
from maskrcnn_deploy.runtime import cli
from maskrcnn_deploy.runtime.cli.exit_codes import EXIT_BACKEND_UNAVAILABLE, EXIT_INTERNAL_ERROR, EXIT_OK

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_PYTHON = "MASKRCNN_DEPLOY_RUNTIME_PYTHON"
NUM_CLASSES = 4
EXPORT_ONLY = ("torch", "torchvision", "onnxscript")  # what the [export] extra installs
# Runs the CLI, then prints one JSON line: the exit code and which export-only packages entered sys.modules.
WRAPPER = ("import json, sys\n"
           "from maskrcnn_deploy.runtime.cli import main\n"
           "try:\n    code = main(sys.argv[1:])\n"
           "except SystemExit as stop:\n    code = stop.code\n"
           f"print('@@' + json.dumps({{'code': code, 'imported': [m for m in {EXPORT_ONLY!r} if m in sys.modules]}}))\n")


def _runtime_python() -> str:
    """The runtime-only virtualenv's python; skip without it, fail without it on CI (the proof must run there)."""
    path = os.environ.get(RUNTIME_PYTHON)
    if not path:
        reason = (f"{RUNTIME_PYTHON} is not set: `make test` or `make test-runtime-only` creates .venv-runtime "
                  "(the base install, no torch) and sets it")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    if not Path(path).is_file():
        pytest.fail(f"{RUNTIME_PYTHON}={path} does not exist: run `make runtime-venv`")
    return path


def run_cli(python: str, *args: str, cwd: Path) -> tuple[int, list[str], str, str]:
    """(exit code, export-only packages imported, stdout without the wrapper's line, stderr) of one command."""
    proc = subprocess.run([python, "-c", WRAPPER, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    lines = proc.stdout.splitlines()
    result = [line for line in lines if line.startswith("@@")]
    assert result, f"the command did not finish (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    status = json.loads(result[-1][2:])
    return status["code"], status["imported"], "\n".join(l for l in lines if not l.startswith("@@")), proc.stderr


# ------------------------------------------------------------------------------- made in the full environment
@pytest.fixture(scope="module")
def made(tmp_path_factory, small_r18):
    """Synthetic val images with the checkpoint's own top detections as ground truth (AP well above 0, and it moves
    when the results move), a seeded ResNet-18-FPN checkpoint, its two static ONNX graphs and the full
    environment's check reports of each graph against the checkpoint (the PyTorch path)."""
    from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset

    from seeded_models import pseudo_ground_truth

    root = tmp_path_factory.mktemp("torch_free")
    make_synthetic_dataset(root / "data", num_train=1, num_val=3, seed=3, image_size=(150, 190))
    ckpt = small_r18.checkpoint  # tests/conftest.py: the shared seeded R18 and its graphs
    val = pseudo_ground_truth(ckpt, sorted((root / "data" / "val").glob("*.png")), root / "data" / "val_pseudo.json",
                              NUM_CLASSES)
    graphs, reports = {}, {}
    for flavour in ("custom", "standard"):
        graphs[flavour] = small_r18.graph(flavour)
        reports[flavour] = root / f"full_{flavour}.json"
        code = cli.main(["check", str(ckpt), str(graphs[flavour]), "--data", str(val), "--report",
                         str(reports[flavour]), "--html", str(root / f"full_{flavour}.html")])
        assert code == EXIT_OK, flavour
    return {"root": root, "val": Path(val), "ckpt": ckpt, "graphs": graphs,
            "reports": {k: json.loads(p.read_text()) for k, p in reports.items()}}


# ------------------------------------------------------------------------------ run in the runtime-only venv
def test_runtime_environment_has_no_torch_installed():
    """The proof means something only if torch cannot be imported there at all (a base install, no extras)."""
    code = ("import importlib.util as u, json; "
            "print(json.dumps({m: u.find_spec(m) is not None for m in ('torch', 'torchvision', 'onnxscript', "
            "'onnxconverter_common', 'maskrcnn_deploy.runtime.cli', 'onnxruntime', 'onnxruntime_extensions')}))")
    found = json.loads(subprocess.run([_runtime_python(), "-c", code], capture_output=True, text=True, check=True,
                                      timeout=120).stdout)
    assert found == {"torch": False, "torchvision": False, "onnxscript": False, "onnxconverter_common": False,
                     "maskrcnn_deploy.runtime.cli": True, "onnxruntime": True, "onnxruntime_extensions": True}


@pytest.mark.parametrize("flavour", ["custom", "standard"])
def test_predict_runs_without_torch(made, flavour, tmp_path):
    code, imported, out, err = run_cli(_runtime_python(), "predict", made["graphs"][flavour], made["val"].parent / "val",
                                       "--out", tmp_path / "pred", "--score-thresh", "0.05", cwd=tmp_path)
    assert (code, imported) == (EXIT_OK, []), err[-3000:]
    images = sorted((made["val"].parent / "val").glob("*.png"))
    assert len(images) == 3 and sorted(p.name for p in (tmp_path / "pred").glob("*.png")) == [p.name for p in images]
    assert sum(int(line.split(": ")[1].split()[0]) for line in out.splitlines() if "detections ->" in line) > 0, out


def test_check_without_torch_gives_the_pytorch_path_ap(made, tmp_path):
    """check takes an ONNX reference: the standard-ops graph against the custom-node one, both torch-free, passes
    fp32, and each graph's AP is the AP the full environment measured for the checkpoint (PyTorch path)."""
    report = tmp_path / "check.json"
    code, imported, out, err = run_cli(_runtime_python(), "check", made["graphs"]["custom"],
                                       made["graphs"]["standard"], "--data", made["val"], "--tolerance", "fp32",
                                       "--report", report, cwd=tmp_path)
    assert (code, imported) == (EXIT_OK, []), err[-3000:] + out[-3000:]
    assert "PASS" in out and (tmp_path / "check.html").is_file()
    ap = json.loads(report.read_text())["ap"]
    full = {flavour: made["reports"][flavour]["ap"] for flavour in ("custom", "standard")}
    for kind in ("bbox", "segm"):
        assert full["custom"]["reference"][kind]["AP"] > 0.2, full["custom"]["reference"][kind]
        pytorch = full["custom"]["reference"][kind]  # the checkpoint, eager PyTorch
        assert full["standard"]["reference"][kind] == pytorch
        assert ap["reference"][kind] == pytorch, kind   # custom graph, numpy pre/postprocessing, no torch
        assert ap["test"][kind] == pytorch, kind        # standard-ops graph, no torch


def test_bench_runs_without_torch(made, tmp_path):
    code, imported, out, err = run_cli(_runtime_python(), "bench", made["graphs"]["custom"], made["graphs"]["standard"],
                                       "--data", made["val"], "--max-images", "2", "--warmup", "0", "--iterations",
                                       "1", "--out", tmp_path / "bench", cwd=tmp_path)
    assert (code, imported) == (EXIT_OK, []), err[-3000:]
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert [a["calls"] for a in report["artifacts"]] == [2, 2] and (tmp_path / "bench" / "bench.png").is_file()


@pytest.mark.parametrize("argv, extra", [
    (["export", "{ckpt}", "-o", "{tmp}/x.onnx"], "export"),
    (["predict", "{ckpt}", "{val_dir}", "--out", "{tmp}/pred"], "export"),
    (["check", "{ckpt}", "{custom}", "--data", "{val}"], "export"),
    (["convert", "--fp16", "{custom}", "-o", "{tmp}/x.fp16.onnx", "--data", "{val}"], "calibrate"),
])
def test_runtime_environment_names_the_missing_extra(made, argv, extra, tmp_path):
    """A real missing extra (the runtime venv has none): one line naming it, exit 3, nothing written."""
    names = {"ckpt": made["ckpt"], "custom": made["graphs"]["custom"], "val": made["val"],
             "val_dir": made["val"].parent / "val", "tmp": tmp_path}
    code, _, _, err = run_cli(_runtime_python(), *(a.format(**names) for a in argv), cwd=tmp_path)
    assert code == EXIT_BACKEND_UNAVAILABLE, err[-3000:]
    assert err.strip().splitlines() == [err.strip()] and f"pip install 'maskrcnn-deploy[{extra}]'" in err, err
    assert f"`maskrcnn-deploy {argv[0]}" in err and not list(tmp_path.glob("x*"))


# --------------------------------------------------------------- a missing extra simulated in the full environment
@pytest.mark.parametrize("missing, argv, extra", [
    ("torch", ["export", "m.pt", "-o", "x.onnx"], "export"),
    ("onnxscript", ["export", "m.pt", "-o", "x.onnx"], "export"),
    ("torch", ["train", "--data", "d", "--out", "o"], "export"),
    ("torch", ["eval", "m.pth", "--data", "d.json"], "export"),
    ("onnxconverter_common", ["convert", "--fp16", "m.onnx", "-o", "x.onnx", "--data", "d"], "calibrate"),
    ("onnxconverter_common", ["calibrate", "m.onnx", "--data", "d", "-o", "x.onnx", "--eval-data", "v.json"],
     "calibrate"),
])
def test_missing_extra_is_one_line_and_exit_3(monkeypatch, capsys, missing, argv, extra):
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` now raises ModuleNotFoundError
    assert cli.main(argv) == EXIT_BACKEND_UNAVAILABLE
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "Traceback" not in err
    assert err.startswith(f"maskrcnn-deploy: error: `maskrcnn-deploy {argv[0]}") and f"module {missing} " in err
    assert err.endswith(f"pip install 'maskrcnn-deploy[{extra}]'"), err


def test_graphs_need_no_extra(monkeypatch):
    """Only checkpoints need PyTorch: .onnx and engine paths pass the check (and fail later on their own)."""
    from maskrcnn_deploy.runtime.cli.checkpoint_options import require_torch_for_checkpoints

    monkeypatch.setitem(sys.modules, "torch", None)
    require_torch_for_checkpoints("check", ["a.onnx", "b.engine", "c.plan", "d.tflite"])
    with pytest.raises(MissingExtraError, match=r"\[export\]"):
        require_torch_for_checkpoints("check", ["a.onnx", "model.PKL"])


def test_unguarded_import_of_an_extra_still_names_it(monkeypatch, capsys):
    """main() maps a ModuleNotFoundError of an extra's module from any command to exit 3 with the extra; a missing
    module of no extra is a broken install (exit 4, traceback)."""
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr(cli.data, "run", lambda args: importlib.import_module("torch"))
    assert cli.main(["data", "synth", "--out", "x"]) == EXIT_BACKEND_UNAVAILABLE
    assert "`maskrcnn-deploy data` needs PyTorch" in capsys.readouterr().err
    monkeypatch.setattr(cli.data, "run", lambda args: importlib.import_module("no_such_module_here"))
    assert cli.main(["data", "synth", "--out", "x"]) == EXIT_INTERNAL_ERROR
    assert "Traceback" in capsys.readouterr().err


def test_extras_match_pyproject(monkeypatch):
    """common/extras.py names each extra pyproject.toml declares for these modules, and the base install has none
    of them (the torch-free promise, in the metadata)."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert {"export", "calibrate", "tensorrt", "openvino", "ray", "triton", "all", "test"} <= set(extras)
    packages = {"torch": "export", "torchvision": "export", "onnxscript": "export",
                "onnxconverter-common": "calibrate", "cuda-bindings": "tensorrt", "openvino": "openvino",
                "ray": "ray", "tritonclient": "triton"}
    for package, extra in packages.items():
        assert any(req.startswith(package) for req in extras[extra]), (package, extra)
        assert extra_of(package.replace("-", "_").replace("cuda_bindings", "cuda.bindings")) == extra
        assert not any(req.startswith(package) for req in project["dependencies"]), package
    assert extras["all"] == ["maskrcnn-deploy[export,calibrate,tensorrt,openvino,ray,triton]"]
    assert "maskrcnn-deploy[all]" in extras["test"]
    monkeypatch.setitem(sys.modules, "onnxconverter_common", None)
    with pytest.raises(MissingExtraError, match=r"^`x` needs onnxconverter-common .*'maskrcnn-deploy\[calibrate\]'$"):
        require_extra("calibrate", "`x`")
