"""The CI gate (docs/ci.md): exit codes, the versioned JSON report schema, the example workflow.

Exit codes come from real command lines, run as a CI job runs them (a subprocess, `python -m
maskrcnn_deploy.runtime.cli`), on a seeded ResNet-18-FPN checkpoint and two small synthetic images:
0 the checkpoint against itself, 1 against a copy with perturbed box weights, 2 a corrupt checkpoint,
3 a well-formed engine on a machine without TensorRT, 130 SIGINT. The two real reports are then
validated against runtime/schemas/parity_report.v1.schema.json, whose keys are frozen here.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import string
import subprocess
import sys
import time
from importlib.metadata import version as installed_version
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import numpy as np
import pytest
import torch

from maskrcnn_deploy.common.errors import BackendUnavailableError
from maskrcnn_deploy.export.graph_io import METADATA_KEY
from maskrcnn_deploy.model.checkpoint import save_checkpoint
from maskrcnn_deploy.model.config import resnet18_fpn
from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset
from maskrcnn_deploy.runtime import cli, parity
from maskrcnn_deploy.runtime.backend.tensorrt.environment import (
    NOT_INSTALLED,
    EngineMetadata,
    TensorRTError,
    TensorRTUnavailableError,
    is_real_tensorrt,
    sha256_file,
    write_metadata,
)
from maskrcnn_deploy.runtime.cli import check as check_command
from maskrcnn_deploy.runtime.cli import exit_codes

from seeded_models import seeded_model

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "docs" / "ci" / "parity-gate.yml"

try:
    import tensorrt as _trt
except (ImportError, OSError):
    _trt = None
TENSORRT_RUNS_HERE = is_real_tensorrt(_trt) and torch.cuda.is_available()

# The report layout of each schema version: "" is the top level, "a.b" a nested object, "x[]" the items
# of array x. A change to the report must add a version here (with a new schema file), never edit one.
FROZEN_KEYS = {
    1: {
        "": ["ap", "box_error_px", "box_iou", "detections", "failures", "histograms", "images", "mask_iou",
             "match_fraction", "package_version", "passed", "raw", "schema", "score_delta", "tolerances",
             "worst_images"],
        "schema": ["name", "version"],
        "tolerances": ["match_iou", "max_ap_delta", "max_box_error_px", "max_score_delta", "min_box_iou",
                       "min_mask_iou", "min_match_fraction", "name", "outlier_percentile"],
        "detections": ["matched", "reference", "test"],
        "match_fraction": ["reference", "test"],
        **{name: ["count", "max", "mean", "median", "min", "p1", "p5", "p95", "p99"]
           for name in ("box_iou", "box_error_px", "score_delta", "mask_iou")},
        "histograms": ["box_error_px", "mask_iou"],
        "histograms.box_error_px": ["counts", "edges"],
        "histograms.mask_iou": ["counts", "edges"],
        "raw": ["images", "max_box_error", "max_mask_prob_error", "max_score_error", "num_detections_mismatch"],
        "ap": ["delta", "reference", "test"],
        **{f"ap.{side}": ["bbox", "segm"] for side in ("reference", "test", "delta")},
        **{f"ap.{side}.{kind}": sorted(["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs",
                                        "ARm", "ARl"])
           for side in ("reference", "test", "delta") for kind in ("bbox", "segm")},
        "worst_images[]": ["image", "matched", "reference", "test"],
    },
}
# version 2 adds detections.tied_at_cap (runtime/parity/matching.py ties_at_the_cap)
FROZEN_KEYS[2] = {**FROZEN_KEYS[1], "detections": ["matched", "reference", "test", "tied_at_cap"]}


def _cli(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """`maskrcnn-deploy ARGS` in a fresh interpreter, as a CI step runs it."""
    return subprocess.run([sys.executable, "-m", "maskrcnn_deploy.runtime.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def _one_line_error(stderr: str) -> str:
    """The error line, which must be the last line of stderr and the only one (progress lines may precede it)."""
    errors = [line for line in stderr.splitlines() if line.startswith("maskrcnn-deploy: error: ")]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]) and "Traceback" not in stderr, stderr
    return errors[0]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    """Two synthetic val images with COCO json, a seeded checkpoint and a copy with perturbed box weights."""
    root = tmp_path_factory.mktemp("gate")
    val_json = make_synthetic_dataset(root / "data", num_train=1, num_val=2, seed=3, image_size=(96, 128))["val"]
    config = resnet18_fpn(4, min_size=96, max_size=128, box_score_thresh=0.05, rpn_pre_nms_top_n_test=200,
                          rpn_post_nms_top_n_test=100, detections_per_img=20)
    model = seeded_model(config)
    reference = save_checkpoint(root / "reference.pt", model, config)
    with torch.no_grad():  # the regression: boxes move by pixels
        weight = model.roi_heads.box_predictor.bbox_pred.weight
        weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    perturbed = save_checkpoint(root / "perturbed.pt", model, config)
    return SimpleNamespace(root=root, val_json=val_json, config=config, reference=reference, perturbed=perturbed)


@pytest.fixture(scope="module")
def checks(gate):
    """`check` of the reference against itself ("pass") and against the perturbed copy ("fail")."""
    runs = {}
    for name, artifact in (("pass", gate.reference), ("fail", gate.perturbed)):
        report = gate.root / f"parity_{name}.json"
        proc = _cli("check", gate.reference, artifact, "--data", gate.val_json, "--report", report)
        runs[name] = SimpleNamespace(proc=proc, path=report,
                                     report=json.loads(report.read_text()) if report.exists() else None)
    return runs


@pytest.fixture(scope="module")
def schema():
    return json.loads(parity.REPORT_SCHEMA_FILE.read_text())


# ----------------------------------------------------------------------------- exit codes
def test_exit_codes_are_distinct_and_cli_keeps_its_name():
    codes = [exit_codes.EXIT_OK, exit_codes.EXIT_PARITY_FAILURE, exit_codes.EXIT_BAD_INPUT,
             exit_codes.EXIT_BACKEND_UNAVAILABLE, exit_codes.EXIT_INTERNAL_ERROR, exit_codes.EXIT_INTERRUPTED]
    assert codes == [0, 1, 2, 3, 4, 130]
    assert cli.EXIT_BAD_INPUT == 2  # imported from runtime.cli by other code
    assert issubclass(TensorRTUnavailableError, TensorRTError)
    assert issubclass(TensorRTUnavailableError, BackendUnavailableError)


def test_exit_0_when_parity_passes(checks):
    run = checks["pass"]
    assert run.proc.returncode == exit_codes.EXIT_OK, run.proc.stderr
    assert run.proc.stdout.splitlines()[-1] == "PASS"
    report = run.report
    assert report["passed"] is True and report["failures"] == []
    assert report["detections"]["matched"] == report["detections"]["reference"] == report["detections"]["test"] > 0
    assert report["box_error_px"]["max"] < 1e-3 and report["mask_iou"]["min"] > 0.999  # the same model twice
    assert run.path.with_suffix(".html").is_file()  # `check --report X.json` also writes X.html (docs/ci.md)


def test_exit_1_on_a_regression(checks):
    run = checks["fail"]
    assert run.proc.returncode == exit_codes.EXIT_PARITY_FAILURE, run.proc.stderr
    assert run.proc.stdout.splitlines()[-1].startswith("FAIL: ")
    report = run.report
    assert report["passed"] is False
    assert report["box_error_px"]["max"] > report["tolerances"]["max_box_error_px"]
    assert any(f.startswith("box error max") for f in report["failures"])


def test_exit_2_on_bad_input(gate, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint" * 64)
    proc = _cli("check", corrupt, gate.reference, "--data", gate.val_json, "--max-images", "1")
    assert proc.returncode == exit_codes.EXIT_BAD_INPUT
    assert "corrupt.pt" in _one_line_error(proc.stderr)
    # a bad option value is bad input too, in the same one-line form (in-process: same main())
    assert cli.main(["check", str(gate.reference), str(gate.reference), "--data", str(gate.val_json),
                     "--set", "max_box_error_px=tiny"]) == exit_codes.EXIT_BAD_INPUT


def _fake_engine(folder: Path, config, plugin: Path | None = None) -> Path:
    """Bytes that are no engine, with metadata that is right about them: every check before TensorRT passes."""
    engine = folder / "model.engine"
    engine.write_bytes(bytes(range(256)) * 16)
    write_metadata(engine, EngineMetadata(
        tensorrt_version="10.13.0.35", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0", precision="fp32",
        precision_source="graph", strongly_typed=True,
        input_profile={"images": {"min": [1, 3, 96, 128], "opt": [1, 3, 96, 128], "max": [1, 3, 96, 128]},
                       "image_sizes": {"min": [1, 2], "opt": [1, 2], "max": [1, 2]}},
        plugin_library=str(plugin) if plugin else None, plugin_sha256="0" * 64 if plugin else None,
        onnx_path="model.onnx", onnx_sha256="0" * 64, engine_sha256=sha256_file(engine),
        engine_bytes=engine.stat().st_size, package_version="0.1.0", build_time_utc="2026-01-01T00:00:00Z",
        build_seconds=1.0, onnx_metadata={METADATA_KEY: json.dumps({"config": config.to_dict(), "graph_format": 2})}))
    return engine


@pytest.mark.skipif(TENSORRT_RUNS_HERE, reason="TensorRT and a GPU are here: the fake engine would reach TensorRT")
def test_exit_3_when_the_backend_is_missing_not_2(gate, tmp_path, capsys):
    engine = _fake_engine(tmp_path, gate.config)
    proc = _cli("check", gate.reference, engine, "--data", gate.val_json, "--max-images", "1")
    assert proc.returncode == exit_codes.EXIT_BACKEND_UNAVAILABLE, proc.stderr
    error = _one_line_error(proc.stderr)
    assert error.endswith(NOT_INSTALLED) or "no CUDA GPU is visible" in error

    # the engine's own problems are still bad input on a machine without TensorRT: they are checked first
    args = ["check", str(gate.reference), str(engine), "--data", str(gate.val_json), "--max-images", "1"]
    with open(engine, "ab") as f:
        f.write(b"\0")
    assert cli.main(args) == exit_codes.EXIT_BAD_INPUT
    assert "does not match its metadata" in _one_line_error(capsys.readouterr().err)

    # the TensorRT plugin library the engine needs, not built here: part of the backend, so 3 as well
    from maskrcnn_deploy.plugins.tensorrt.build_library import default_plugin_library
    if Path(default_plugin_library()).is_file():
        pytest.skip("the default TensorRT plugin library is built here")
    engine = _fake_engine(tmp_path, gate.config, plugin=tmp_path / "gone" / "libplugin.so")
    assert cli.main(args) == exit_codes.EXIT_BACKEND_UNAVAILABLE
    assert "needs the TensorRT plugin library" in _one_line_error(capsys.readouterr().err)


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_exit_130_on_interrupt(tmp_path):
    out = tmp_path / "synth"
    proc = subprocess.Popen([sys.executable, "-m", "maskrcnn_deploy.runtime.cli", "data", "synth", "--out", str(out),
                             "--train", "100000", "--val", "0", "--size", "64"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any((out / "train").glob("*.png")):  # inside main(): images are being written
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"no image was written before the interrupt: {proc.communicate()[1]}")
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == exit_codes.EXIT_INTERRUPTED, stderr
    assert "interrupted" in stderr


def test_exit_4_on_a_bug_never_1(monkeypatch, capsys):
    for error in (ZeroDivisionError("division by zero"), RuntimeError("CUDA error: an illegal memory access")):
        def broken(args, error=error):
            raise error
        monkeypatch.setattr(check_command, "run", broken)
        assert cli.main(["check", "a.pt", "b.onnx", "--data", "val.json"]) == exit_codes.EXIT_INTERNAL_ERROR
        err = capsys.readouterr().err
        assert "Traceback" in err and str(error) in err and "internal error" in err


# ----------------------------------------------------------------------------- the report schema
def _validator(schema: dict) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_real_reports_validate(checks, schema):
    validator = _validator(schema)
    for run in checks.values():
        validator.validate(run.report)
        assert run.report["schema"] == parity.REPORT_SCHEMA == {"name": "maskrcnn-deploy.parity-report", "version": 2}
        assert run.report["package_version"] == installed_version("maskrcnn-deploy")
        assert run.report["ap"] is not None and run.report["raw"] is not None  # the full layout was exercised
    assert checks["fail"].report["worst_images"]  # so were the items of worst_images


def _det(boxes, scores, labels, size=(40, 50)):
    masks = np.zeros((len(boxes), *size), bool)
    for mask, (x0, y0, x1, y1) in zip(masks, np.asarray(boxes, int)):
        mask[y0:y1, x0:x1] = True
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "scores": np.asarray(scores, np.float32),
            "labels": np.asarray(labels, np.int64), "masks": masks}


def test_reports_without_ap_raw_or_pairs_validate(schema):
    validator = _validator(schema)
    one = _det([[2, 3, 20, 30]], [0.9], [1])
    empty = _det(np.zeros((0, 4)), [], [])
    matched = parity.check_parity([one], [one], parity.tolerances_from("fp32")).to_dict()
    nothing = parity.check_parity([empty], [empty], parity.tolerances_from("int8")).to_dict()
    for report in (matched, nothing):
        validator.validate(report)
        assert report["ap"] is None and report["raw"] is None
    assert matched["passed"] and nothing["match_fraction"] == {"reference": None, "test": None}
    assert nothing["box_iou"]["count"] == 0 and nothing["box_iou"]["min"] is None


def test_schema_rejects_a_changed_report(checks, schema):
    validator = _validator(schema)
    good = checks["pass"].report

    def invalid(change) -> bool:
        report = json.loads(json.dumps(good))
        change(report)
        return not validator.is_valid(report)

    for key in good:
        assert invalid(lambda r, key=key: r.pop(key)), f"removing {key!r} still validates"
    assert invalid(lambda r: r.update(unannounced=1))
    assert invalid(lambda r: r["detections"].pop("matched"))
    assert invalid(lambda r: r["detections"].pop("tied_at_cap"))
    assert invalid(lambda r: r["tolerances"].update(max_new_error=1.0))
    assert invalid(lambda r: r["ap"]["reference"]["segm"].pop("AP"))
    assert invalid(lambda r: r["schema"].update(version=1))
    assert invalid(lambda r: r.update(images="2"))
    assert invalid(lambda r: r["failures"].append("passed, yet a failure"))    # passed is true
    assert invalid(lambda r: r.update(passed=False))                           # failed, yet no failure


def _schema_keys(node: dict, root: dict, path: str = "", out: dict | None = None) -> dict[str, list[str]]:
    """{path: sorted property names} of every object the schema describes (paths as in FROZEN_KEYS)."""
    out = {} if out is None else out
    if "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    for branch in node.get("oneOf", []):
        _schema_keys(branch, root, path, out)
    if "properties" in node:
        out[path] = sorted(node["properties"])
        for name, child in node["properties"].items():
            _schema_keys(child, root, f"{path}.{name}" if path else name, out)
    if isinstance(node.get("items"), dict):
        _schema_keys(node["items"], root, f"{path}[]", out)
    return out


def _report_keys(value, path: str = "", out: dict | None = None) -> dict[str, list[str]]:
    """The same map for a report (lists: their first item)."""
    out = {} if out is None else out
    if isinstance(value, dict):
        out[path] = sorted(value)
        for name, child in value.items():
            _report_keys(child, f"{path}.{name}" if path else name, out)
    elif isinstance(value, list) and value:
        _report_keys(value[0], f"{path}[]", out)
    return out


def test_report_keys_are_frozen_per_schema_version(checks, schema):
    version = parity.REPORT_SCHEMA["version"]
    assert parity.REPORT_SCHEMA_FILE.name == f"parity_report.v{version}.schema.json"
    assert schema["properties"]["schema"]["properties"]["version"] == {"const": version}
    assert schema["properties"]["schema"]["properties"]["name"] == {"const": parity.REPORT_SCHEMA["name"]}
    frozen = FROZEN_KEYS[version]
    assert _schema_keys(schema, schema) == frozen
    written = {**_report_keys(checks["pass"].report), **_report_keys(checks["fail"].report)}
    assert written == frozen


# ----------------------------------------------------------------------------- the example workflow
def _commands(script: str) -> list[list[str]]:
    """Every `maskrcnn-deploy ...` command in a shell script, as argument lists (up to ||, &&, ;, ;;)."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        start = line.find("maskrcnn-deploy ")
        if start < 0:
            continue
        tokens = shlex.split(line[start:], comments=True)
        stop = next((i for i, t in enumerate(tokens) if t in ("||", "&&", ";", ";;", "|")), len(tokens))
        commands.append(tokens[1:stop])
    return commands


def _expand(text: str, env: dict[str, str], precision: str | None) -> str:
    """A workflow string with `${{ matrix.precision }}` and then shell `$VARS` from `env` filled in."""
    text = text.replace("${{ matrix.precision }}", str(precision))
    return string.Template(text).safe_substitute(env)


def test_example_workflow_is_there():
    text = WORKFLOW.read_text()
    assert "maskrcnn-deploy check " in text and "actions/upload-artifact" in text


def test_example_workflow_runs_valid_commands_and_uploads_the_reports():
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow.get("on", workflow.get(True))  # PyYAML reads the key `on` as True (YAML 1.1)
    parser = cli.build_parser()
    checks_seen = 0
    for job_name, job in workflow["jobs"].items():
        matrix = job.get("strategy", {}).get("matrix", {})
        for precision in matrix.get("precision", [None]):
            env = {k: _expand(str(v), {}, precision)
                   for k, v in {**workflow.get("env", {}), **job.get("env", {})}.items()}
            reports = []
            for step in job["steps"]:
                for argv in _commands(step.get("run", "")):
                    args = parser.parse_args([_expand(a, env, precision) for a in argv])  # argparse exits 2 on a bad one
                    if args.func is check_command.run:
                        checks_seen += 1
                        assert args.tolerance in parity.TOLERANCE_PRESETS, (job_name, args.tolerance)
                        assert args.data.endswith(".json"), "check against COCO json so AP is compared"
                        assert args.report and args.report.endswith(".json") and not args.html
                        reports.append(Path(args.report))
            uploads = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
            assert len(uploads) == 1 and uploads[0].get("if") == "always()", job_name
            uploaded = _expand(uploads[0]["with"]["path"], env, precision).split()
            for report in reports:  # the JSON, the HTML page beside it and the page's assets
                assert {report.as_posix(), report.with_suffix(".html").as_posix(),
                        f"{report.with_suffix('').as_posix()}_files/"} <= set(uploaded), (job_name, uploaded)
    assert checks_seen == 3 + 1  # ONNX Runtime fp32/fp16/int8 and TensorRT fp16
