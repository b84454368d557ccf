"""PyTorch eager vs ONNX Runtime latency of the whole detector, in one run, on this CPU.

For ResNet-18-FPN and ResNet-50-FPN (seeded torchvision-compatible weights, 91 classes as COCO) at
800x1344, it exports both flavours (custom MultiLevelRoIAlign node, standard ops), then times
`run_raw` (the deploy graph on a preprocessed batch of one) in PyTorch eager and in ONNX Runtime:
median of --repeat runs after --warmup. Prints ratios (PyTorch time / ONNX Runtime time: > 1 means
ONNX Runtime is faster). Also times the custom op alone (1000x256x7x7 pooling, median of --op-repeat):
the MultiLevelRoIAlign node in ONNX Runtime through the onnxruntime-extensions PyOp, with its callback
calling the C kernel through ctypes on numpy buffers (now) and with the former callback that wrapped
the arrays as torch tensors for the PyTorch op (swapped in for comparison), against the same kernel
called from PyTorch directly; the differences are the PyOp's overhead per call.

    .venv/bin/python bench/onnx_runtime_speed.py --out out/bench_ort
    .venv/bin/python bench/onnx_runtime_speed.py --models      # the custom op alone
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import numpy as np
import onnx
import torch
import torchvision
from onnx import TensorProto, helper
from timing import median_time  # bench/timing.py

from maskrcnn_deploy.export.deploy_model import DeployMaskRCNN
from maskrcnn_deploy.export.graph_io import read_onnx
from maskrcnn_deploy.export.onnx_export import ExportOptions, export_onnx
from maskrcnn_deploy.export.preprocess import preprocess_images
from maskrcnn_deploy.model.checkpoint import load_torchvision_state_dict
from maskrcnn_deploy.model.config import resnet18_fpn, torchvision_v1
from maskrcnn_deploy.model.mask_rcnn import MaskRCNN
from maskrcnn_deploy.plugins import onnxruntime_op
from maskrcnn_deploy.plugins.onnxruntime_op import load_session
from maskrcnn_deploy.plugins.op_spec import DOMAIN, OP_TYPE
from maskrcnn_deploy.plugins.torch_ops import multilevel_roi_align, multilevel_roi_align_op
from maskrcnn_deploy.runtime.backend.onnxrt import OnnxPredictor

SIZE = (800, 1344)
SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]


def build(name: str) -> MaskRCNN:
    torch.manual_seed(0)
    if name == "r50":
        tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
        model = MaskRCNN(torchvision_v1(91))
        load_torchvision_state_dict(model, tv.state_dict())
    else:
        model = MaskRCNN(resnet18_fpn(91, min_size=800, max_size=1333))
    return model.eval()


def _torch_wrapped(rois, p2, p3, p4, p5, extents, **attr) -> np.ndarray:
    """The PyOp's former callback: numpy inputs as zero-copy torch tensors, through the PyTorch op."""
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    scales = [float(s) for s in attr["spatial_scales"].split()]
    return multilevel_roi_align_op(as_tensor(rois), [as_tensor(p) for p in (p2, p3, p4, p5)], attr["output_height"],
                                   attr["output_width"], scales, attr["sampling_ratio"], bool(attr["aligned"]),
                                   attr["mode"], attr["canonical_scale"], attr["canonical_level"],
                                   attr["level_eps"], as_tensor(extents) if len(extents) else None).numpy()


@contextlib.contextmanager
def _former_callback():
    """The registered PyOp runs `_torch_wrapped` inside the block (its hooker looks the body up per call)."""
    from onnxruntime_extensions import _ocos

    op = next(o for o in _ocos.Opdef._odlist.values() if o.op_type == f"{DOMAIN}::{OP_TYPE}")
    op.body = _torch_wrapped
    try:
        yield
    finally:
        op.body = onnxruntime_op._multilevel_roi_align


def custom_op_overhead(repeat: int) -> dict:
    """MultiLevelRoIAlign node alone in ONNX Runtime (ctypes callback, former torch callback) vs the torch op,
    1000 rois 7x7 at 800x1344 (output 1000x256x7x7)."""
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, 256, SIZE[0] // 2 ** (i + 2), SIZE[1] // 2 ** (i + 2), generator=gen) for i in range(4)]
    xy = torch.rand(1000, 2, generator=gen) * 1000
    rois = torch.cat([torch.zeros(1000, 1), xy, xy + torch.rand(1000, 2, generator=gen) * 300 + 8], 1)
    node = helper.make_node("MultiLevelRoIAlign", ["rois", "p2", "p3", "p4", "p5"], ["y"], domain="maskrcnn_deploy",
                            output_height=7, output_width=7, sampling_ratio=2, aligned=0, spatial_scales=SCALES,
                            canonical_scale=224.0, canonical_level=4, level_eps=1e-6, mode="avg")
    inputs = [helper.make_tensor_value_info("rois", TensorProto.FLOAT, [1000, 5])]
    inputs += [helper.make_tensor_value_info(f"p{i + 2}", TensorProto.FLOAT, list(f.shape)) for i, f in enumerate(feats)]
    graph = helper.make_graph([node], "roi", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("maskrcnn_deploy", 1)])
    model.ir_version = 10
    path = Path("out/bench_ort/roi_node.onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    session = load_session(read_onnx(path), name=path)
    feed = {"rois": rois.numpy(), **{f"p{i + 2}": f.numpy() for i, f in enumerate(feats)}}
    reference = multilevel_roi_align(feats, rois, 7, SCALES, 2, False).numpy()
    t_torch = median_time(lambda: multilevel_roi_align(feats, rois, 7, SCALES, 2, False), repeat, 2)
    t_ctypes = median_time(lambda: session.run(None, feed), repeat, 2)
    diff = float(np.abs(session.run(None, feed)[0] - reference).max())
    with _former_callback():
        t_former = median_time(lambda: session.run(None, feed), repeat, 2)
        diff_former = float(np.abs(session.run(None, feed)[0] - reference).max())
    return {"ort_node_ms": t_ctypes * 1e3, "ort_node_torch_callback_ms": t_former * 1e3, "torch_op_ms": t_torch * 1e3,
            "overhead_ms": (t_ctypes - t_torch) * 1e3, "overhead_torch_callback_ms": (t_former - t_torch) * 1e3,
            "max_abs_diff": diff, "max_abs_diff_torch_callback": diff_former, "repeat": repeat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/bench_ort")
    parser.add_argument("--models", nargs="*", default=["r18", "r50"], help="none: the custom op alone")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--op-repeat", type=int, default=20, help="timed calls of the custom op alone")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), input {SIZE[0]}x{SIZE[1]}, batch 1, "
          f"medians of {args.repeat} after {args.warmup} warm-up runs")
    overhead = custom_op_overhead(args.op_repeat)
    print(f"custom op alone (1000x256x7x7, medians of {args.op_repeat}): torch op {overhead['torch_op_ms']:.1f} ms; "
          f"ONNX Runtime node, ctypes callback {overhead['ort_node_ms']:.1f} ms (overhead "
          f"{overhead['overhead_ms']:+.1f} ms, max|diff| {overhead['max_abs_diff']:.1e}), former torch callback "
          f"{overhead['ort_node_torch_callback_ms']:.1f} ms (overhead {overhead['overhead_torch_callback_ms']:+.1f} ms, "
          f"max|diff| {overhead['max_abs_diff_torch_callback']:.1e})")
    summary = {"custom_op": overhead, "models": {}}
    image = torch.rand(3, *SIZE, generator=torch.Generator().manual_seed(1))
    for name in args.models:
        model = build(name)
        deploy = DeployMaskRCNN(model).eval()
        batch, sizes = preprocess_images([image], model.config, SIZE)  # numpy float32 [1,3,H,W], [1,2]
        with torch.inference_mode():
            t_torch = median_time(lambda: deploy(torch.from_numpy(batch), torch.from_numpy(sizes)), args.repeat, args.warmup)
        row = {"pytorch_ms": t_torch * 1e3}
        print(f"{name}: PyTorch eager {t_torch * 1e3:8.1f} ms")
        for flavour in ("custom", "standard"):
            path = out / f"{name}_{flavour}.onnx"
            export_onnx(model, path, ExportOptions(roi_align=flavour, input_size=SIZE))
            predictor = OnnxPredictor(path)
            t_ort = median_time(lambda: predictor.run_raw(batch, sizes), args.repeat, args.warmup)
            row[f"ort_{flavour}_ms"] = t_ort * 1e3
            print(f"{name}: ONNX Runtime {flavour:8s} {t_ort * 1e3:8.1f} ms   PyTorch / ORT = {t_torch / t_ort:4.2f}x")
            path.unlink()
        summary["models"][name] = row
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"summary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
