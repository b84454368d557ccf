"""The CPU flavour of INT8 (`calibrate --target cpu`): ONNX Runtime's `quantize_static` of the standard-ops graph.

    summary = quantize_cpu_int8(CalibrateOptions(model="m.standard.onnx", data="data/train.json",
                                                 output="m.cpu-int8.onnx", method="max",
                                                 eval_data="data/val.json"), evaluate=graph_evaluator(threads))

Why a second INT8 graph: `calibrate`'s Q/DQ graph (calibration/calibrate.py) is placed for TensorRT (symmetric s8
activations, Q/DQ only inside the layer groups TensorRT fuses). On a CPU, ONNX Runtime's own quantizer in QDQ
format (u8 asymmetric activations, s8 weights, on every Conv, Gemm and MatMul) was the faster graph in both CPU
runtimes: 2.12x over the float32 graph in OpenVINO and 1.94x in ONNX Runtime, against 1.92x / 1.76x for the
TensorRT-placed graph, at an equal or smaller segm AP drop (bench/openvino_speed.py, bench/README.md). So the
CPU flavour is that tool on the project's own calibration images (calibration/data.py: the predictors'
preprocessing), written as a normal artifact: the float graph's metadata (export/graph_io.py) plus a
"quantization" entry, checked like every graph calibrate writes.

Reads these fields of CalibrateOptions: model, data, output, method (max: ONNX Runtime's MinMax, what was
measured; percentile; entropy), percentile, num_images, batch_size, eval_data, eval_images, max_ap_drop. With
eval_data it measures the segm AP drop of the INT8 graph against the float graph (`evaluate`, the runtime's
evaluator: ONNX Runtime or OpenVINO) and, when the drop exceeds max_ap_drop, writes nothing and returns
{"met": False, ...}: there is no per-group fallback here (that is the TensorRT flavour's AP budget).

The input must be the standard-ops export (`export --roi-align standard`): ONNX Runtime's calibrator opens
plain sessions without our custom-op library, and OpenVINO runs only standard ops.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import onnx

from maskrcnn_deploy.calibration.budget import Evaluate
from maskrcnn_deploy.calibration.calibrate import CalibrateOptions, _load_inputs, save_checked
from maskrcnn_deploy.calibration.data import CalibrationBatches
from maskrcnn_deploy.calibration.regions import PrecisionError
from maskrcnn_deploy.export.graph_io import metadata_of, read_graph_info, write_graph_info
from maskrcnn_deploy.plugins.op_spec import is_custom_roi_align

__all__ = ["quantize_cpu_int8", "CPU_INT8_OPS", "CPU_METHODS", "refusal_line"]

CPU_INT8_OPS = ("Conv", "Gemm", "MatMul")  # the op types quantize_static quantizes here
CPU_METHODS = {"max": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}  # --method -> CalibrationMethod


def _reader(batches: CalibrationBatches):
    """An onnxruntime CalibrationDataReader over `batches` ({"images": [B,3,H,W], "image_sizes": [B,2]} feeds)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(batches)

        def get_next(self):
            return next(self.feeds, None)

        def rewind(self):
            self.feeds = iter(batches)

    return Reader()


def _quantize(options: CalibrateOptions, batches: CalibrationBatches) -> onnx.ModelProto:
    """quantize_static of options.model (QDQ, u8 activations, s8 weights, CPU_INT8_OPS) as a ModelProto."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if options.method not in CPU_METHODS:
        raise PrecisionError(f"--method must be one of {', '.join(CPU_METHODS)} for --target cpu, "
                             f"got {options.method!r}")
    extra = {"CalibPercentile": options.percentile} if options.method == "percentile" else {}
    with tempfile.TemporaryDirectory(prefix="mrd_cpu_int8_") as tmp:
        path = Path(tmp) / "model.onnx"
        quantize_static(str(options.model), str(path), _reader(batches), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(CPU_INT8_OPS),
                        calibrate_method=getattr(CalibrationMethod, CPU_METHODS[options.method]),
                        extra_options=extra)
        return onnx.load(str(path))


def _with_metadata(model: onnx.ModelProto, float_model: onnx.ModelProto, options: CalibrateOptions,
                   images: int) -> onnx.ModelProto:
    """`model` carrying the float graph's metadata (only it: quantize_static adds its own entries) and a
    "quantization" entry saying how it was made."""
    import onnxruntime

    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata_of(float_model))

    info = read_graph_info(float_model, options.model)
    info["quantization"] = {"target": "cpu", "tool": f"onnxruntime {onnxruntime.__version__} quantize_static",
                            "format": "QDQ", "activations": "uint8", "weights": "int8", "ops": list(CPU_INT8_OPS),
                            "method": options.method, "calibration_images": images}
    write_graph_info(model, info)
    return model


def refusal_line(summary: dict) -> str:
    """The one line `calibrate --target cpu` prints when the AP drop exceeds the budget."""
    budget = summary["budget"]
    return (f"refused: the CPU INT8 graph loses {budget['drop']:.2f} segm AP points on --eval-data (budget "
            f"{budget['max_ap_drop']:.2f}); {summary['output']} not written: calibrate on more images "
            "(--num-images) or another --method, or use --target tensorrt, whose AP budget keeps layers in float")


def quantize_cpu_int8(options: CalibrateOptions, evaluate: Evaluate | None = None) -> dict:
    """Write options.output, the CPU INT8 graph of options.model (module docstring); returns a summary:
    {"output", "method", "calibration_images", "seconds", "met", "budget": {...} with eval_data}."""
    t0 = time.monotonic()
    if options.eval_data and evaluate is None:
        raise ValueError("quantize_cpu_int8: eval_data needs an evaluator (runtime/evaluate.py graph_evaluator)")
    if options.max_ap_drop < 0:
        raise PrecisionError(f"--max-ap-drop must be >= 0 AP points, got {options.max_ap_drop}")
    graph, evalset, batches = _load_inputs(options)
    if any(is_custom_roi_align(node) for node in graph.model.graph.node):
        raise PrecisionError(f"{options.model} uses the custom RoIAlign op: --target cpu quantizes the standard-ops "
                             "graph (`maskrcnn-deploy export ... --roi-align standard`), which ONNX Runtime's "
                             "calibrator and OpenVINO run")
    print(f"--target cpu: ONNX Runtime quantize_static (QDQ, u8 activations, s8 weights, {'/'.join(CPU_INT8_OPS)}; "
          f"{options.method}) on {len(batches.paths)} calibration images", flush=True)
    model = _with_metadata(_quantize(options, batches), graph.model, options, len(batches.paths))
    summary = {"output": str(options.output), "method": options.method, "calibration_images": len(batches.paths),
               "met": True}
    if evalset is not None:
        baseline, int8 = evaluate(graph.model, evalset), evaluate(model, evalset)
        drop = baseline["segm"] - int8["segm"]
        summary["met"] = drop <= options.max_ap_drop
        summary["budget"] = {"max_ap_drop": options.max_ap_drop, "baseline": baseline, "final": int8, "drop": drop,
                             "eval_images": len(evalset.images)}
        print(f"segm AP: float {baseline['segm']:.2f}, CPU INT8 {int8['segm']:.2f} (drop {drop:.2f}, budget "
              f"{options.max_ap_drop:.2f}); bbox AP: {baseline['bbox']:.2f} -> {int8['bbox']:.2f}", flush=True)
    summary["seconds"] = round(time.monotonic() - t0, 1)
    if summary["met"]:
        save_checked(model, options.output)
        print(f"wrote {options.output} in {summary['seconds']:.0f} s")
    return summary
