"""What costs OpenVINO its speed on the deploy graph: the settings the OpenVINO backend needs for parity, one at a
time, against ONNX Runtime, in one round-robin run (issue 22).

runtime/backend/openvino.py runs a standard-ops graph with (1) ONNX's TopK tie rule (the lower index first;
OpenVINO imports ONNX TopK as unstable), built from unstable TopKs over unique keys (runtime/backend/
openvino_topk.py), (2) each NonMaxSuppression threshold raised to the next float32 (ONNX suppresses above it,
OpenVINO at it) and (3) float32 inference precision (OpenVINO's CPU default on a CPU with bf16 instructions is
bf16). Rows:

    onnxruntime                          ONNX Runtime, the reference row
    openvino backend                     (1) + (2) + (3): what `--backend openvino` runs
    openvino f32, OpenVINO stable TopK   (1) as OpenVINO's `stable=True` on every TopK (the backend before
                                         openvino_topk.py) + (2) + (3)
    openvino f32, unstable TopK          (2) + (3), TopK as imported: not ONNX's ties, a lower bound
    openvino OpenVINO's import, f32      `core.read_model` as it is, (3) only
    openvino OpenVINO's import, bf16     `core.read_model` as it is, OpenVINO's default precision

    .venv/bin/python bench/openvino_settings.py GRAPH.onnx [--repeat 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
from timing import round_robin_ms  # bench/timing.py

from maskrcnn_deploy.runtime.backend import openvino as backend
from maskrcnn_deploy.runtime.load import load


def topk_inputs(model) -> list[int]:
    """Input length of every TopK of an OpenVINO model, in graph order."""
    return [op.input(0).get_partial_shape()[-1].get_length() for op in model.get_ordered_ops()
            if op.get_type_name() == "TopK"]


def graph_with_topk(core, path: str, stable: bool):
    """OpenVINO's import of `path` with (2) of the module docstring, and every TopK as imported (`stable` False) or
    made OpenVINO-stable (True)."""
    model = core.read_model(path)
    for op in model.get_ops():
        if op.get_type_name() == "TopK":
            op.set_attribute("stable", stable)
    backend.raise_nms_thresholds(model)
    return model


def main() -> None:
    import openvino as ov

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graph", help="a static standard-ops deploy graph (export --roi-align standard)")
    parser.add_argument("--repeat", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    reference = load(args.graph, threads=args.threads, backend="onnxruntime")
    image = np.random.default_rng(0).random((3, *reference.input_size), dtype=np.float32)
    batch, sizes = reference.prepare([image] * (reference.fixed_batch or 1))
    core = ov.Core()
    f32 = {ov.properties.hint.inference_precision: ov.Type.f32, ov.properties.inference_num_threads: args.threads}
    default = {ov.properties.inference_num_threads: args.threads}

    def call(model, config):
        request = core.compile_model(model, "CPU", config).create_infer_request()
        return lambda: request.infer({"images": batch, "image_sizes": sizes})

    calls = {
        "onnxruntime": functools.partial(reference.run_raw, batch, sizes),
        "openvino backend": functools.partial(load(args.graph, threads=args.threads, backend="openvino").run_raw,
                                              batch, sizes),
        "openvino f32, OpenVINO stable TopK": call(graph_with_topk(core, args.graph, True), f32),
        "openvino f32, unstable TopK": call(graph_with_topk(core, args.graph, False), f32),
        "openvino OpenVINO's import, f32": call(core.read_model(args.graph), f32),
        "openvino OpenVINO's import, bf16": call(core.read_model(args.graph), default),
    }
    lengths = topk_inputs(core.read_model(args.graph))
    print(f"TopK input lengths: {lengths}; CPU capabilities: {core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')}")
    ms = round_robin_ms(calls, args.repeat, args.warmup)
    print(f"{'row':<40} {'median ms':>10} {'ONNX Runtime / row':>19}")
    for name, value in ms.items():
        print(f"{name:<40} {value:10.1f} {ms['onnxruntime'] / value:18.2f}x")


if __name__ == "__main__":
    main()
