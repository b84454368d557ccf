"""`maskrcnn-deploy demo`: the whole toolchain on an embedded default, in one output folder.

    data      synthetic scenes as COCO json + PNG                       OUT/data/{train,val}.json
    train     ResNet-18-FPN on them (or reuse OUT/model/model_final.pt)  OUT/model/
    export    both ONNX flavours: the custom MultiLevelRoIAlign node      OUT/model.onnx
              and standard RoiAlign ops                                  OUT/model.standard.onnx
    precision float16 graph and INT8 Q/DQ graph (percentile)             OUT/model.fp16.onnx, OUT/model.int8.onnx
    cpu int8  with OpenVINO installed: the CPU INT8 graph of the         OUT/model.cpu-int8.onnx
              standard-ops one (calibrate --target cpu), and OpenVINO rows for it and the float32 standard graph
    tensorrt  FP32/FP16/INT8 engines when TensorRT and a GPU are here    OUT/model*.engine
    check     every artifact against the PyTorch model on the val split  OUT/checks/<row>.{json,html,png}
    table     backend, precision, AP, AP drop, parity, latency, speed-up OUT/demo.{json,html}, printed

Each step reuses what an earlier run left in OUT (every output is written whole or not at all), so an
interrupted demo resumes where it stopped. Latency is the median wall time of `predict([image])` per
image during the check pass (decoded image in, detections with pasted masks out), on this machine,
measured one backend after the other.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

__all__ = ["DemoSettings", "DemoRow", "run_demo", "format_table", "tensorrt_unavailable_reason"]


@dataclass
class DemoSettings:
    out: Path = Path("out/demo")
    train_images: int = 1000
    val_images: int = 100
    iterations: int = 3000
    time_limit_s: float = 660.0       # training budget; the whole demo stays within 20 min on 2 cores
    calibration_images: int = 32
    check_images: int | None = None   # None: the whole val split
    threads: int | None = None        # ONNX Runtime intra-op threads (None: all cores)


@dataclass
class DemoRow:
    backend: str                  # pytorch | onnxruntime | openvino | tensorrt
    precision: str                # fp32 | fp16 | int8
    graph: str                    # what runs: checkpoint, custom-op or standard-op graph, engine
    artifact: str | None = None
    bbox_ap: float | None = None  # COCO AP, 0-100
    segm_ap: float | None = None
    segm_ap_drop: float | None = None  # PyTorch segm AP minus this row's, points
    parity: str = ""              # reference | PASS | FAIL | skipped
    median_ms: float | None = None
    speedup: float | None = None  # PyTorch median latency / this row's
    report: str | None = None     # the row's HTML check report, relative to OUT
    note: str = ""                # why a row was skipped, or what failed
    failures: list[str] = field(default_factory=list)


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


# ----------------------------------------------------------------------------- artifacts
def _make_data(s: DemoSettings) -> Path:
    from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset

    data = s.out / "data"
    if (data / "val.json").exists() and (data / "train.json").exists():
        _say(f"reusing dataset {data}")
    else:
        _say(f"making {s.train_images} + {s.val_images} synthetic scenes in {data}")
        make_synthetic_dataset(data, num_train=s.train_images, num_val=s.val_images, seed=0, image_size=(256, 256))
    return data


def _train(s: DemoSettings, data: Path) -> Path:
    from maskrcnn_deploy.model.train_coco import CocoTraining, train_on_coco

    checkpoint = s.out / "model" / "model_final.pt"
    if checkpoint.exists():
        _say(f"reusing trained model {checkpoint}")
        return checkpoint
    _say(f"training ResNet-18-FPN for at most {s.time_limit_s:.0f} s (resumes from OUT/model/last.pt)")
    return train_on_coco(CocoTraining(data=data, out=checkpoint.parent, iterations=s.iterations,
                                      time_limit_s=s.time_limit_s))


def _made_once(path: Path, make: Callable[[], object], message: str | None = None) -> Path:
    """`path` as an earlier run left it, else made now by `make()`: the demo's resume rule (every maker
    writes its file whole or not at all, so an existing file is a finished step)."""
    if path.exists():
        _say(f"reusing {path}")
    else:
        if message:
            _say(message)
        make()
    return path


def _export(checkpoint: Path, path: Path, roi_align: str) -> Path:
    from maskrcnn_deploy.export.onnx_export import ExportOptions, export_checkpoint

    return _made_once(path, lambda: export_checkpoint(checkpoint, path, ExportOptions(roi_align=roi_align)),
                      f"exporting {path} (RoIAlign {roi_align})")


def _fp16(s: DemoSettings, onnx_path: Path, data: Path) -> Path:
    from maskrcnn_deploy.calibration.convert import convert_fp16_file

    out = onnx_path.with_name("model.fp16.onnx")
    return _made_once(out, lambda: convert_fp16_file(onnx_path, out, data=data / "train.json",
                                                     num_images=s.calibration_images),
                      f"converting {out} (float16 where the calibration ranges allow)")


def _int8(s: DemoSettings, onnx_path: Path, data: Path) -> Path:
    from maskrcnn_deploy.calibration.calibrate import CalibrateOptions, calibrate_int8

    out = onnx_path.with_name("model.int8.onnx")
    return _made_once(out, lambda: calibrate_int8(CalibrateOptions(
        model=str(onnx_path), data=str(data / "train.json"), output=str(out), method="percentile",
        num_images=s.calibration_images, threads=s.threads)))


def _cpu_int8(s: DemoSettings, standard: Path, data: Path) -> Path:
    from maskrcnn_deploy.calibration.calibrate import CalibrateOptions
    from maskrcnn_deploy.calibration.cpu_int8 import quantize_cpu_int8

    out = standard.with_name("model.cpu-int8.onnx")
    return _made_once(out, lambda: quantize_cpu_int8(CalibrateOptions(
        model=str(standard), data=str(data / "train.json"), output=str(out), method="max",
        num_images=s.calibration_images)))


def _openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT (10 or later) and a CUDA GPU are here; else the backend's own one-line reason (the
    plugin library is built when missing, and a missing compiler then stops the demo with its own error)."""
    try:
        import tensorrt
    except (ImportError, OSError):
        tensorrt = None
    from maskrcnn_deploy.runtime.backend.tensorrt.environment import (
        TensorRTUnavailableError,
        require_cuda,
        require_tensorrt,
    )

    try:
        require_tensorrt(tensorrt)
        require_cuda()
    except TensorRTUnavailableError as err:
        return str(err)
    return None


def _engines(s: DemoSettings, graphs: dict[str, Path]) -> dict[str, Path]:
    """precision -> engine built from that precision's graph (strongly typed where the graph says so)."""
    from maskrcnn_deploy.plugins.tensorrt.build_library import build_plugin_library, default_plugin_library
    from maskrcnn_deploy.runtime.backend.tensorrt.build_plan import BuildOptions
    from maskrcnn_deploy.runtime.backend.tensorrt.engine_builder import build_engine

    plugin = default_plugin_library()
    if not plugin.exists():
        _say(f"building the TensorRT plugin library {plugin}")
        plugin = build_plugin_library(plugin.parent)
    options = BuildOptions(plugin=plugin, timing_cache=s.out / "trt.timing")
    engines = {}
    for precision, graph in graphs.items():
        engine = graph.with_suffix(".engine")
        engines[precision] = _made_once(engine, lambda: build_engine(graph, engine, options),
                                        f"building TensorRT engine {engine}")
    return engines


# ----------------------------------------------------------------------------- checks
def _ap(side) -> tuple[float | None, float | None]:
    if side.ap is None:
        return None, None
    return round(100 * side.ap["bbox"]["AP"], 2), round(100 * side.ap["segm"]["AP"], 2)


def _median_ms(latencies_s: list[float]) -> float:
    import numpy as np

    return round(1000 * float(np.median(latencies_s)), 1)


def _check_row(row: DemoRow, checkpoint: Path, data: Path, s: DemoSettings, reference_run, name: str) -> DemoRow:
    from maskrcnn_deploy.runtime import parity
    from maskrcnn_deploy.runtime.check import run_check
    from maskrcnn_deploy.runtime.report_html import write_check_html

    checks = s.out / "checks"
    checks.mkdir(parents=True, exist_ok=True)
    run = run_check(checkpoint, row.artifact, data / "val.json", parity.tolerances_from(row.precision),
                    max_images=s.check_images, threads=s.threads, reference_run=reference_run,
                    backend="openvino" if row.backend == "openvino" else "auto")
    parity.write_report_json(run.report, checks / f"{name}.json")
    write_check_html(run, checks / f"{name}.html", title=f"{row.backend} {row.precision} ({row.graph}) vs PyTorch")
    row.bbox_ap, row.segm_ap = _ap(run.artifact)
    row.parity = "PASS" if run.report.passed else "FAIL"
    row.failures = list(run.report.failures)
    row.median_ms = _median_ms(run.artifact.latencies_s)
    row.report = f"checks/{name}.html"
    return row


def run_demo(s: DemoSettings) -> list[DemoRow]:
    """Every step of the module docstring; returns the table's rows (also written to OUT/demo.json)."""
    from maskrcnn_deploy.runtime.check import load_check_images, predict_side

    t0 = time.monotonic()
    s.out.mkdir(parents=True, exist_ok=True)
    data = _make_data(s)
    checkpoint = _train(s, data)
    custom = _export(checkpoint, s.out / "model.onnx", "custom")
    standard = _export(checkpoint, s.out / "model.standard.onnx", "standard")
    fp16 = _fp16(s, custom, data)
    int8 = _int8(s, custom, data)

    rows = [DemoRow("onnxruntime", "fp32", "custom op", str(custom)),
            DemoRow("onnxruntime", "fp32", "standard ops", str(standard)),
            DemoRow("onnxruntime", "fp16", "custom op", str(fp16)),
            DemoRow("onnxruntime", "int8", "custom op", str(int8))]
    if _openvino_installed():  # the standard-ops graph and its CPU INT8 flavour in OpenVINO
        rows += [DemoRow("openvino", "fp32", "standard ops", str(standard)),
                 DemoRow("openvino", "int8", "standard ops, CPU INT8", str(_cpu_int8(s, standard, data)))]
    reason = tensorrt_unavailable_reason()
    if reason is None:
        engines = _engines(s, {"fp32": custom, "fp16": fp16, "int8": int8})
        rows += [DemoRow("tensorrt", p, "engine", str(e)) for p, e in engines.items()]
    else:
        rows += [DemoRow("tensorrt", p, "engine", parity="skipped", note=reason) for p in ("fp32", "fp16", "int8")]
        _say(f"skipping TensorRT FP32/FP16/INT8: {reason}")

    _say("PyTorch reference run over the val split")
    val = load_check_images(data / "val.json", s.check_images)
    reference = predict_side(checkpoint, val.images, val.coco, val.ids, "reference")
    bbox, segm = _ap(reference)
    table = [DemoRow("pytorch", "fp32", "checkpoint", str(checkpoint), bbox, segm, 0.0, "reference",
                     _median_ms(reference.latencies_s), 1.0)]
    for row in rows:
        if row.parity == "skipped":
            table.append(row)
            continue
        name = f"{row.backend}_{row.precision}" + ("_standard" if row.graph.startswith("standard ops") else "")
        _say(f"checking {name}: {row.artifact}")
        _check_row(row, checkpoint, data, s, reference, name)
        if segm is not None and row.segm_ap is not None:
            row.segm_ap_drop = round(segm - row.segm_ap, 2)
        row.speedup = round(table[0].median_ms / row.median_ms, 2) if row.median_ms else None
        table.append(row)
    _write_outputs(s, table, time.monotonic() - t0)
    return table


# ----------------------------------------------------------------------------- table
COLUMNS = ["backend", "precision", "graph", "bbox AP", "segm AP", "AP drop", "parity", "median ms", "speed-up"]


def _cells(row: DemoRow) -> list[str]:
    def num(value, fmt):
        return "-" if value is None else format(value, fmt)

    return [row.backend, row.precision, row.graph, num(row.bbox_ap, ".2f"), num(row.segm_ap, ".2f"),
            num(row.segm_ap_drop, "+.2f"), row.parity, num(row.median_ms, ".1f"),
            "-" if row.speedup is None else f"{row.speedup:.2f}x"]


def format_table(rows: list[DemoRow]) -> str:
    """The printed table: one line per row, columns aligned; skipped rows say why below."""
    cells = [COLUMNS] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in rows:
        if r.note:
            lines.append(f"{r.backend} {r.precision}: {r.note}")
        if r.failures:
            lines.append(f"{r.backend} {r.precision} ({r.graph}) parity: " + "; ".join(r.failures))
    lines.append("AP: COCO AP x100 on the val split; AP drop: segm AP points below PyTorch; speed-up: PyTorch "
                 "median latency / the row's")
    return "\n".join(lines)


def _write_outputs(s: DemoSettings, table: list[DemoRow], seconds: float) -> None:
    from maskrcnn_deploy.common.files import write_json
    from maskrcnn_deploy.runtime.report_html import write_summary_html

    text = format_table(table)
    print(text, flush=True)
    summary = {"schema": {"name": "maskrcnn-deploy.demo", "version": 1}, "seconds": round(seconds, 1),
               "rows": [asdict(r) for r in table]}
    write_json(s.out / "demo.json", summary)
    links = [(f"{r.backend} {r.precision} ({r.graph})", r.report) for r in table if r.report]
    notes = [line for line in text.splitlines()[len(table) + 2:]]
    write_summary_html(s.out / "demo.html", "maskrcnn-deploy demo", COLUMNS, [_cells(r) for r in table],
                       notes=notes, links=links)
    _say(f"done in {seconds / 60:.1f} min: {s.out / 'demo.json'}, {s.out / 'demo.html'}")
