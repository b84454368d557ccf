"""`--roi-align standard` (export/onnx_ops.py): the fused RoIAlign op decomposed into standard ONNX ops gives
the op's own results, per-image extents included (edge-repeated maps, and the rois that sample past their
image's map pooled finer, masked and averaged), in ONNX Runtime and, when installed, OpenVINO."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from maskrcnn_deploy.export import onnx_ops
from maskrcnn_deploy.plugins.onnxruntime_op import load_session
from maskrcnn_deploy.plugins.torch_ops import multilevel_roi_align

SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
CANVAS = (128, 192)
EXTENTS = torch.tensor([[64.0, 192.0], [128.0, 96.0], [32.0, 64.0]])  # (height, width) each image covers, px


class Pool(torch.nn.Module):
    def __init__(self, out: int, sampling_ratio: int, aligned: bool, with_extents: bool):
        super().__init__()
        self.out, self.sampling_ratio, self.aligned, self.with_extents = out, sampling_ratio, aligned, with_extents

    def forward(self, rois, p2, p3, p4, p5, extents):
        return multilevel_roi_align([p2, p3, p4, p5], rois, self.out, SCALES, self.sampling_ratio, self.aligned,
                                    extents=extents if self.with_extents else None)


def _inputs(seed: int = 0, inside: bool = False):
    """Three images' P2..P5 on the canvas and rois: inside the images, past them, slivers at their edges, and
    rois magnified 2x (torchvision's scale for short images), so many samples land past each image's map.
    inside: every roi clipped to its image (as the deploy graph clips boxes)."""
    gen = torch.Generator().manual_seed(seed)
    feats = [torch.randn(3, 8, CANVAS[0] // 2 ** (i + 2), CANVAS[1] // 2 ** (i + 2), generator=gen) for i in range(4)]
    n = 240
    batch = torch.randint(0, 3, (n, 1), generator=gen).float()
    size = EXTENTS[batch[:, 0].long()]                                        # [n,2] (h, w)
    xy = torch.rand(n, 2, generator=gen) * size.flip(1)
    wh = torch.rand(n, 2, generator=gen) * size.flip(1) * torch.where(torch.arange(n)[:, None] % 3 == 0, 2.0, 0.7)
    rois = torch.cat([batch, xy, xy + wh], 1)
    rois[:40, 1:] *= 2.0                                                       # magnified
    rois[40:50, 2], rois[40:50, 4] = size[40:50, 0] - 0.2, size[40:50, 0]      # slivers on the bottom edge
    if inside:
        rois[:, 1:] = torch.minimum(rois[:, 1:], size.flip(1).repeat(1, 2))
    return rois, feats


def _export(tmp_path, flavour: str, sampling_ratio: int, aligned: bool, with_extents: bool, inside: bool = False):
    rois, feats = _inputs(inside=inside)
    translation = onnx_ops.multilevel_roi_align_standard if flavour == "standard" else onnx_ops.multilevel_roi_align_custom
    path = tmp_path / f"{flavour}.onnx"
    program = torch.onnx.export(Pool(7, sampling_ratio, aligned, with_extents).eval(), (rois, *feats, EXTENTS),
                                dynamo=True, opset_version=18, input_names=["rois", "p2", "p3", "p4", "p5", "extents"],
                                custom_translation_table={torch.ops.maskrcnn_deploy.multilevel_roi_align.default:
                                                          translation})
    program.save(str(path))
    return path, rois, feats


def _run(path, rois, feats):
    model = onnx.load(str(path))
    names = [i.name for i in model.graph.input]
    values = dict(zip(["rois", "p2", "p3", "p4", "p5", "extents"], [rois, *feats, EXTENTS]))
    return load_session(model).run(None, {n: values[n].numpy() for n in names})[0]


@pytest.mark.parametrize("sampling_ratio, aligned, inside", [(2, False, False), (2, True, False), (0, True, True)])
def test_standard_ops_with_extents_equal_the_op(tmp_path, sampling_ratio, aligned, inside):
    """Fixed sampling: any roi. Adaptive sampling (Detectron2's, aligned) cannot be masked per sample with a
    fixed-size RoiAlign; its rois inside their image never sample past its map, and the deploy graph clips
    every box to its image (docs/ops.md)."""
    path, rois, feats = _export(tmp_path, "standard", sampling_ratio, aligned, with_extents=True, inside=inside)
    model = onnx.load(str(path))
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    got = _run(path, rois, feats)
    want = multilevel_roi_align(feats, rois, 7, SCALES, sampling_ratio, aligned, extents=EXTENTS).numpy()
    whole = multilevel_roi_align(feats, rois, 7, SCALES, sampling_ratio, aligned).numpy()
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    assert (np.abs(want - whole).max(axis=(1, 2, 3)) > 1e-3).sum() >= 10  # the extents matter for these rois
    if sampling_ratio:
        assert sum(n.op_type == "ReduceMean" for n in model.graph.node) == 4  # the finer path on each level


def test_standard_ops_without_extents_are_unchanged(tmp_path):
    path, rois, feats = _export(tmp_path, "standard", 2, False, with_extents=False)
    assert not any(n.op_type == "ReduceMean" for n in onnx.load(str(path)).graph.node)
    np.testing.assert_allclose(_run(path, rois, feats),
                               multilevel_roi_align(feats, rois, 7, SCALES, 2, False).numpy(), atol=2e-5, rtol=0)


def test_the_custom_node_carries_the_extents(tmp_path):
    path, rois, feats = _export(tmp_path, "custom", 2, False, with_extents=True)
    node = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "MultiLevelRoIAlign")
    assert list(node.input)[5] == "extents"
    np.testing.assert_array_equal(_run(path, rois, feats),
                                  multilevel_roi_align(feats, rois, 7, SCALES, 2, False, extents=EXTENTS).numpy())


def test_adaptive_legacy_pooling_cannot_be_bounded_with_standard_ops(tmp_path):
    with pytest.raises(Exception, match="cannot bound adaptive legacy RoIAlign to each image's extent"):
        _export(tmp_path, "standard", 0, False, with_extents=True)


def test_openvino_runs_the_standard_ops_with_extents(tmp_path):
    ov = pytest.importorskip("openvino", reason="OpenVINO not installed (extra [openvino])")
    path, rois, feats = _export(tmp_path, "standard", 2, False, with_extents=True)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = [p.get_any_name() for p in compiled.inputs]
    values = dict(zip(["rois", "p2", "p3", "p4", "p5", "extents"], [rois, *feats, EXTENTS]))
    got = compiled({n: values[n].numpy() for n in names})[compiled.outputs[0]]
    want = multilevel_roi_align(feats, rois, 7, SCALES, 2, False, extents=EXTENTS).numpy()
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
