"""What costs OpenVINO its speed on the deploy graph: the settings the OpenVINO backend needs for parity, one at a
time, against ONNX Runtime, in one round-robin run (issue 22).

runtime/backend/openvino.py runs a standard-ops graph with (1) every TopK made stable (ONNX's tie rule: the lower
index first; OpenVINO imports ONNX TopK as unstable), (2) each NonMaxSuppression threshold raised to the next
float32 (ONNX suppresses above it, OpenVINO at it) and (3) float32 inference precision (OpenVINO's CPU default
on a CPU with bf16 instructions is bf16). Rows:

    onnxruntime                       ONNX Runtime, the reference row
    openvino backend                  (1) + (2) + (3): what `--backend openvino` runs
    openvino f32, unstable TopK       (2) + (3), no stable TopK
    openvino f32, stable TopK <= N    (2) + (3), stable only where the TopK's input has at most N entries (the
                                      small per-level RPN ones), to locate the cost
    openvino OpenVINO's import, f32   `core.read_model` as it is, (3) only
    openvino OpenVINO's import, bf16  `core.read_model` as it is, OpenVINO's default precision

    .venv/bin/python bench/openvino_settings.py GRAPH.onnx [--repeat 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
from timing import round_robin_ms  # bench/timing.py

from maskrcnn_deploy.export.graph_io import read_onnx
from maskrcnn_deploy.runtime.backend import openvino as backend
from maskrcnn_deploy.runtime.load import load


def topk_inputs(model) -> list[int]:
    """Input length of every TopK of an OpenVINO model, in graph order."""
    return [op.input(0).get_partial_shape()[-1].get_length() for op in model.get_ordered_ops()
            if op.get_type_name() == "TopK"]


def backend_graph(path: str, stable_up_to: int | None):
    """The backend's model (runtime/backend/openvino.py read_model), with TopK stable only where the input has at
    most `stable_up_to` entries (None: everywhere, as the backend)."""
    model = backend.read_model(path, read_onnx(path))
    if stable_up_to is not None:
        for op in model.get_ordered_ops():
            if op.get_type_name() == "TopK" and op.input(0).get_partial_shape()[-1].get_length() > stable_up_to:
                op.set_attribute("stable", False)
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

    lengths = topk_inputs(backend_graph(args.graph, None))
    small = sorted(lengths)[len(lengths) // 2]  # about half of the TopKs stable
    calls = {
        "onnxruntime": functools.partial(reference.run_raw, batch, sizes),
        "openvino backend": functools.partial(load(args.graph, threads=args.threads, backend="openvino").run_raw,
                                              batch, sizes),
        "openvino f32, unstable TopK": call(backend_graph(args.graph, 0), f32),
        f"openvino f32, stable TopK <= {small}": call(backend_graph(args.graph, small), f32),
        "openvino OpenVINO's import, f32": call(core.read_model(args.graph), f32),
        "openvino OpenVINO's import, bf16": call(core.read_model(args.graph), default),
    }
    print(f"TopK input lengths: {lengths}; CPU capabilities: {core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')}")
    ms = round_robin_ms(calls, args.repeat, args.warmup)
    print(f"{'row':<40} {'median ms':>10} {'ONNX Runtime / row':>19}")
    for name, value in ms.items():
        print(f"{name:<40} {value:10.1f} {ms['onnxruntime'] / value:18.2f}x")


if __name__ == "__main__":
    main()
