"""`maskrcnn-deploy package triton`: a Triton Inference Server model repository for an artifact
(runtime/triton/, docs/serving.md):

    maskrcnn-deploy package triton model.onnx -o model_repository/ [--name maskrcnn] [--instances 1] [--max-batch 8]
    maskrcnn-deploy package triton model.engine -o model_repository/ [--onnx model.onnx]

The ONNX graph must have standard ops (export --roi-align standard); a custom-node graph is refused (exit 2).
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    pa = sub.add_parser("package", help="package an artifact for a serving system (Triton Inference Server)")
    kinds = pa.add_subparsers(dest="target", required=True)
    tr = kinds.add_parser("triton", help="write a Triton model repository: the model, Python pre/postprocessing and "
                                         "an ensemble taking encoded images")
    tr.add_argument("artifact", help="an .onnx graph with standard ops, or a .engine/.plan from `build`")
    tr.add_argument("-o", "--output", required=True, help="the model repository folder (created if missing)")
    tr.add_argument("--name", default="maskrcnn", help="the ensemble's name; the steps are NAME_preprocess, "
                                                       "NAME_model, NAME_postprocess (default maskrcnn)")
    tr.add_argument("--instances", type=int, default=1, help="instances of each model (instance_group count)")
    tr.add_argument("--max-batch", type=int, default=None,
                    help="max_batch_size of a graph with a dynamic batch (default 8; an engine: its profile's max)")
    tr.add_argument("--onnx", default=None,
                    help="an engine's ONNX graph (default: the one its metadata names), for its output shapes")
    tr.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.runtime.triton.repository import write_repository

    repo = write_repository(args.artifact, args.output, args.name, args.instances, args.max_batch, args.onnx)
    served = repo.served
    batching = (f"dynamic batching up to {served.max_batch_size}" if served.max_batch_size
                else f"fixed batch {served.settings['batch_size']} (no dynamic batching)")
    print(f"triton repository: {repo.root} (ensemble {repo.names['ensemble']}: {served.platform}, {batching}, "
          f"{args.instances} instance(s) per model)")
    if served.plugin_library:
        print(f"start tritonserver with --backend-config=tensorrt,plugins=\"{served.plugin_library}\"")
    return 0
