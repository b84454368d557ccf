"""Native RoIAlign (plugins/): against torchvision, ONNX Runtime's RoiAlign-16 and a naive reference;
gradients, the FPN level rule on its boundaries, errors, the custom-op registration, CUDA where present."""

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from onnx import TensorProto, helper
from torchvision.ops.poolers import LevelMapper

from maskrcnn_deploy.model.roi_align import assign_fpn_levels
from maskrcnn_deploy.plugins import native
from maskrcnn_deploy.plugins.native import NativeLibraryError
from maskrcnn_deploy.plugins.torch_ops import fpn_levels, multilevel_roi_align, roi_align

SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]


def random_rois(k: int, batch: int, height: float, width: float, seed: int = 0) -> torch.Tensor:
    """[k,5] rois in input pixels: random ones plus the awkward cases at the front."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=gen) * torch.tensor([width * 1.2, height * 1.2]) - torch.tensor([width, height]) * 0.1
    wh = torch.rand(k, 2, generator=gen) * torch.tensor([width * 0.7, height * 0.7])
    rois = torch.cat([torch.randint(0, batch, (k, 1), generator=gen).float(), xy, xy + wh], 1)
    rois[0, 3] = rois[0, 1]                                            # zero width
    rois[1, 4] = rois[1, 2]                                            # zero height
    rois[2, 3:] = rois[2, 1:3]                                         # a point
    rois[3, 1:] = torch.tensor([-20.0, -20.0, -5.0, -3.0])             # wholly outside
    rois[4, 1:] = torch.tensor([-10.0, 5.0, width * 0.5, height + 9])  # partly outside
    rois[5, 1:] = torch.tensor([0.0, 0.0, width, height])              # the whole image
    rois[6, 1:] = torch.tensor([10.0, 12.0, 10.4, 12.3])               # tiny
    rois[7, 1:] = torch.tensor([width + 5, 0, width + 30, 10])          # right of the image
    if k > 8:
        rois[8, 1:] = torch.tensor([width * 0.6, height * 0.6, width * 0.2, height * 0.1])  # inverted on both axes
    return rois


# ----------------------------------------------------------------------------- single map
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling", [0, 2])
@pytest.mark.parametrize("out", [7, 14])
def test_roi_align_matches_torchvision(aligned, sampling, out):
    feats = torch.randn(3, 16, 24, 30, generator=torch.Generator().manual_seed(1))
    worst = 0.0
    for scale in (1.0, 0.5, 0.25):
        rois = random_rois(150, 3, 24 / scale, 30 / scale)
        ours = roi_align(feats, rois, out, scale, sampling, aligned)
        ref = torchvision.ops.roi_align(feats, rois, out, scale, sampling, aligned)
        worst = max(worst, (ours - ref).abs().max().item())
    assert worst <= 1e-5, worst
    assert ours.abs().sum() > 0


def _ort_roi_align(feats: np.ndarray, rois: np.ndarray, out: int, scale: float, sampling: int, aligned: bool):
    mode = "half_pixel" if aligned else "output_half_pixel"
    node = helper.make_node("RoiAlign", ["X", "rois", "batch_indices"], ["Y"], mode="avg", output_height=out,
                            output_width=out, sampling_ratio=sampling, spatial_scale=scale,
                            coordinate_transformation_mode=mode)
    graph = helper.make_graph([node], "roi_align", [
        helper.make_tensor_value_info("X", TensorProto.FLOAT, list(feats.shape)),
        helper.make_tensor_value_info("rois", TensorProto.FLOAT, [None, 4]),
        helper.make_tensor_value_info("batch_indices", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, feats.shape[1], out, out])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"X": feats, "rois": rois[:, 1:].copy(), "batch_indices": rois[:, 0].astype(np.int64)})[0]


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling", [0, 2])
@pytest.mark.parametrize("out", [7, 14])
def test_roi_align_matches_onnxruntime_roialign16(aligned, sampling, out):
    feats = torch.randn(2, 8, 20, 26, generator=torch.Generator().manual_seed(2))
    rois = random_rois(60, 2, 40, 52, seed=3)
    ours = roi_align(feats, rois, out, 0.5, sampling, aligned).numpy()
    ref = _ort_roi_align(feats.numpy(), rois.numpy(), out, 0.5, sampling, aligned)
    assert np.abs(ours - ref).max() <= 1e-5


def naive_roi_align(feat: torch.Tensor, roi, out: int, scale: float, sampling: int, aligned: bool, mode: str):
    """Loop-by-loop RoIAlign of one roi on [C,H,W] in float64, written from the paper's description."""
    C, H, W = feat.shape
    off = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (float(v) * scale - off for v in roi[1:])
    rw, rh = x2 - x1, y2 - y1
    if not aligned:
        rw, rh = max(rw, 1.0), max(rh, 1.0)
    gh = sampling or int(np.ceil(rh / out))
    gw = sampling or int(np.ceil(rw / out))

    def bilinear(y, x):
        if y < -1 or y > H or x < -1 or x > W:
            return torch.zeros(C, dtype=torch.float64)
        y, x = min(max(y, 0.0), H - 1), min(max(x, 0.0), W - 1)
        y0, x0 = int(y), int(x)
        y1_, x1_ = min(y0 + 1, H - 1), min(x0 + 1, W - 1)
        ly, lx = y - y0, x - x0
        return ((1 - ly) * (1 - lx) * feat[:, y0, x0] + (1 - ly) * lx * feat[:, y0, x1_]
                + ly * (1 - lx) * feat[:, y1_, x0] + ly * lx * feat[:, y1_, x1_])

    result = torch.zeros(C, out, out, dtype=torch.float64)
    for ph in range(out):
        for pw in range(out):
            samples = [bilinear(y1 + (ph + (iy + 0.5) / gh) * rh / out, x1 + (pw + (ix + 0.5) / gw) * rw / out)
                       for iy in range(gh) for ix in range(gw)]
            if samples:
                stack = torch.stack(samples)
                result[:, ph, pw] = stack.sum(0) / max(len(samples), 1) if mode == "avg" else stack.max(0).values
    return result


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_roi_align_matches_naive_reference_both_modes(mode):
    feats = torch.randn(2, 3, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    rois = random_rois(12, 2, 18, 22, seed=5).double()
    for aligned, sampling in ((False, 2), (True, 0)):
        ours = roi_align(feats, rois, 4, 0.5, sampling, aligned, mode)
        ref = torch.stack([naive_roi_align(feats[int(r[0])], r, 4, 0.5, sampling, aligned, mode) for r in rois])
        assert (ours - ref).abs().max() <= 1e-12
    if mode == "max":  # max really differs from average on these inputs
        assert (ours - roi_align(feats, rois, 4, 0.5, 0, True, "avg")).abs().max() > 0.1


# ----------------------------------------------------------------------------- gradients
def test_gradcheck_float64_single_and_multilevel():
    f = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 0.7, 4.2, 5.1], [1, -1.0, 2.0, 7.5, 3.3], [1, 2.2, 1.1, 2.9, 1.4]],
                        dtype=torch.float64)
    for sampling, aligned, mode in ((2, False, "avg"), (0, True, "avg"), (2, True, "max")):
        assert torch.autograd.gradcheck(lambda x: roi_align(x, rois, 3, 0.9, sampling, aligned, mode), (f,))
    levels = [torch.randn(2, 2, 16 // 2 ** i, 12 // 2 ** i, dtype=torch.float64, requires_grad=True) for i in range(3)]
    rois = torch.tensor([[0, 1, 1, 20, 30], [1, 0, 0, 60, 45], [1, 5, 5, 9, 9], [0, 3, 2, 47, 63]], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda *x: multilevel_roi_align(list(x), rois, 2, SCALES[:3], 0, True, canonical_scale=32), levels)


def test_gradients_match_torchvision():
    f = torch.randn(2, 8, 20, 20, requires_grad=True)
    rois = random_rois(40, 2, 40, 40)
    ours, = torch.autograd.grad(roi_align(f, rois, 7, 0.5, 2).square().sum(), f)
    ref, = torch.autograd.grad(torchvision.ops.roi_align(f, rois, 7, 0.5, 2).square().sum(), f)
    assert (ours - ref).abs().max() < 1e-4 and ref.abs().max() > 1


# ----------------------------------------------------------------------------- FPN levels
def _fpn_inputs(batch=3, channels=8, height=256, width=320, k=300, seed=6):
    gen = torch.Generator().manual_seed(seed)
    feats = [torch.randn(batch, channels, height // 2 ** i // 4, width // 2 ** i // 4, generator=gen) for i in range(4)]
    rois = random_rois(k, batch, height, width, seed)
    big = torch.rand(k // 4, 2, generator=gen) * 400 + 150  # enough boxes for P4 and P5
    rois[-k // 4:, 3:] = rois[-k // 4:, 1:3] + big
    return feats, rois, (height, width)


def _torchvision_pooler(feats, rois, image_size, out, sampling):
    """MultiScaleRoIAlign on our rois, returned in rois order."""
    pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], out, sampling)
    batch = feats[0].shape[0]
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(batch)]
    ref = pooler({str(i): f for i, f in enumerate(feats)}, boxes, [image_size] * batch)
    order = torch.cat([torch.where(rois[:, 0] == i)[0] for i in range(batch)])
    return torch.empty_like(ref).index_copy_(0, order, ref)


@pytest.mark.parametrize("sampling", [0, 2])
@pytest.mark.parametrize("out", [7, 14])
def test_multilevel_matches_multiscale_roialign(sampling, out):
    feats, rois, size = _fpn_inputs()
    levels = fpn_levels(rois, SCALES)
    assert set(levels.tolist()) == {0, 1, 2, 3}  # every level is exercised
    ours = multilevel_roi_align(feats, rois, out, SCALES, sampling, False)
    ref = _torchvision_pooler(feats, rois, size, out, sampling)
    assert (ours - ref).abs().max() <= 1e-5 and ref.abs().sum() > 0
    g = torch.randn_like(ours)
    leaves = [f.clone().requires_grad_() for f in feats]
    ours_grad = torch.autograd.grad(multilevel_roi_align(leaves, rois, out, SCALES, sampling, False), leaves, g)
    ref_grad = torch.autograd.grad(_torchvision_pooler(leaves, rois, size, out, sampling), leaves, g)
    for a, b in zip(ours_grad, ref_grad):
        assert (a - b).abs().max() <= 1e-5


def test_multilevel_aligned_matches_per_level_torchvision():
    feats, rois, _ = _fpn_inputs(seed=7)
    ours = multilevel_roi_align(feats, rois, 7, SCALES, 0, True)
    levels = LevelMapper(2, 5)([rois[:, 1:]])
    ref = torch.zeros_like(ours)
    for lvl, (f, s) in enumerate(zip(feats, SCALES)):
        idx = torch.where(levels == lvl)[0]
        ref[idx] = torchvision.ops.roi_align(f, rois[idx], 7, s, 0, True)
    assert (ours - ref).abs().max() <= 1e-5


def test_level_rule_matches_torchvision_on_boundaries():
    sides = torch.tensor([0.0, 1.0, 50, 111.99, 112, 112.01, 150, 223.999, 224, 224.001, 300, 447.99, 448, 448.01, 900])
    x1 = torch.rand(len(sides), generator=torch.Generator().manual_seed(8)) * 50
    boxes = torch.stack([x1, x1, x1 + sides, x1 + sides], 1)
    boxes = torch.cat([boxes, torch.tensor([[0, 0, 56, 224.0], [10, 10, 122, 458], [0, 0, 448, 112]])])
    boxes = torch.cat([boxes, _random_boxes(2000)])
    ref = LevelMapper(k_min=2, k_max=5)([boxes])
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
    assert torch.equal(fpn_levels(rois, SCALES).long(), ref)
    assert torch.equal(assign_fpn_levels(boxes), ref)
    exact = torch.tensor([[0, 0, 0, 112, 112.0], [0, 0, 0, 224, 224.0], [0, 0, 0, 448, 448.0]])
    assert fpn_levels(exact, SCALES).tolist() == [1, 2, 3]


def _random_boxes(n):
    gen = torch.Generator().manual_seed(9)
    xy = torch.rand(n, 2, generator=gen) * 100
    return torch.cat([xy, xy + torch.rand(n, 2, generator=gen) * 700], 1)


def test_negative_area_pools_nothing_like_torchvision():
    feats, _, size = _fpn_inputs(batch=1, k=8)
    rois = torch.tensor([[0, 50, 10, 20, 90.0], [0, 10, 10, 90, 90]])  # x2 < x1: undefined level
    assert fpn_levels(rois, SCALES).tolist()[0] == -1
    ours = multilevel_roi_align(feats, rois, 7, SCALES, 2, False)
    assert torch.equal(ours, _torchvision_pooler(feats, rois, size, 7, 2))
    assert ours[0].abs().sum() == 0 and ours[1].abs().sum() > 0


def test_inverted_rois_pool_zeros_in_aligned_adaptive_mode():
    """Aligned mode keeps an inverted roi's negative size, so the adaptive sample grid was negative: the CPU
    kernel read past the roi's samples (the process crashed). torchvision pools zeros when both axes are
    inverted (it refuses one inverted axis: "cannot create std::vector larger than max_size()")."""
    feats = torch.randn(1, 4, 24, 30, generator=torch.Generator().manual_seed(2))
    rois = torch.tensor([[0, 80, 80, 40, 20.0], [0, 5, 5, 1, 100], [0, 5, 60, 25, 10], [0, 2, 2, 20, 20]])
    ours = roi_align(feats, rois, 7, 0.25, 0, True)
    assert ours[:3].abs().sum() == 0 and ours[3].abs().sum() > 0
    assert torch.equal(ours[:1], torchvision.ops.roi_align(feats, rois[:1], 7, 0.25, 0, True))
    levels = multilevel_roi_align([feats, feats[..., ::2, ::2].contiguous()], rois, 7, [0.25, 0.125], 0, True)
    assert levels[:3].abs().sum() == 0


# ----------------------------------------------------------------------------- threads, errors, registration
def test_threads_do_not_change_results():
    feats, rois, _ = _fpn_inputs(seed=10)
    leaves = [f.clone().requires_grad_() for f in feats]
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out = multilevel_roi_align(leaves, rois, 7, SCALES, 2, False)
            results.append((out, torch.autograd.grad(out.square().sum(), leaves)))
    finally:
        torch.set_num_threads(before)
    for out, grads in results[1:]:
        assert torch.equal(out, results[0][0])
        assert all(torch.equal(a, b) for a, b in zip(grads, results[0][1]))


# ----------------------------------------------------------------------------- per-image extents
EXTENTS = torch.tensor([[64.0, 96.0], [32.0, 160.0], [128.0, 64.0]])  # (height, width) each image covers, px


def _cropped_pool(feats, rois, extents, out, sampling, aligned, mode):
    """Reference for extents: each image's rois pooled on its own maps, cropped to ceil(extent * scale) cells."""
    result = torch.zeros(rois.shape[0], feats[0].shape[1], out, out, dtype=feats[0].dtype)
    for b, (h, w) in enumerate(extents.tolist()):
        mine = (rois[:, 0] == b).nonzero()[:, 0]
        crops = [f[b:b + 1, :, :int(np.ceil(h * s)), :int(np.ceil(w * s))] for f, s in zip(feats, SCALES)]
        own = torch.cat([torch.zeros_like(rois[mine, :1]), rois[mine, 1:]], dim=1)
        result[mine] = multilevel_roi_align(crops, own, out, SCALES, sampling, aligned, mode=mode)
    return result


@pytest.mark.parametrize("aligned, sampling, mode", [(False, 2, "avg"), (True, 0, "avg"), (False, 2, "max")])
def test_extents_pool_each_image_as_on_its_own_maps(aligned, sampling, mode):
    """A padded canvas with extents gives bit for bit what each image's own smaller maps give: taps past the
    covered rows/columns read 0, taps in their last cell clamp to it. Rois reach 2x past the images (torchvision's
    magnified short images), so many taps land beyond; without extents the canvas answers differently."""
    feats, _, _ = _fpn_inputs(batch=3, height=128, width=160, seed=21)
    rois = torch.cat([random_rois(200, 3, 128.0, 160.0, seed=22), random_rois(100, 3, 256.0, 320.0, seed=23)])
    rois[-40:, 3:] = rois[-40:, 1:3] + torch.rand(40, 2, generator=torch.Generator().manual_seed(4)) * 300 + 150
    ours = multilevel_roi_align(feats, rois, 7, SCALES, sampling, aligned, mode=mode, extents=EXTENTS)
    ref = _cropped_pool(feats, rois, EXTENTS, 7, sampling, aligned, mode)
    assert torch.equal(ours, ref)
    canvas = multilevel_roi_align(feats, rois, 7, SCALES, sampling, aligned, mode=mode)
    assert (canvas - ref).abs().amax(dim=(1, 2, 3)).gt(1e-3).sum() > 30  # rois that read the padding otherwise


def test_extents_gradients_stay_on_the_covered_maps():
    feats, _, _ = _fpn_inputs(batch=3, height=128, width=160, seed=24)
    rois = random_rois(120, 3, 256.0, 320.0, seed=25)
    leaves = [f.clone().requires_grad_() for f in feats]
    grads = torch.autograd.grad(multilevel_roi_align(leaves, rois, 7, SCALES, 2, False, extents=EXTENTS).sum(), leaves)
    for g, s in zip(grads, SCALES):
        for b, (h, w) in enumerate(EXTENTS.tolist()):
            rows, cols = int(np.ceil(h * s)), int(np.ceil(w * s))
            assert g[b, :, rows:].abs().sum() == 0 and g[b, :, :, cols:].abs().sum() == 0
    assert sum(g.abs().sum() for g in grads) > 0
    levels = [torch.randn(3, 2, 32 // 2 ** i, 40 // 2 ** i, dtype=torch.float64, requires_grad=True) for i in range(4)]
    rois64 = torch.tensor([[0, 1, 1, 90, 70], [1, 0, 0, 60, 45], [2, 5, 5, 130, 60], [0, 3, 2, 47, 150]],
                          dtype=torch.float64)
    with pytest.raises(ValueError, match="extents must be float32"):
        multilevel_roi_align(levels, rois64, 2, SCALES, 2, False, extents=EXTENTS.double())


def test_extents_of_the_wrong_shape_are_refused():
    feats, rois, _ = _fpn_inputs(batch=3, k=20, seed=26)
    with pytest.raises(ValueError, match=r"extents must be \[B, 2\] = \(height, width\) per image, B = 3, got shape \(2, 2\)"):
        multilevel_roi_align(feats, rois, 7, SCALES, 2, False, extents=EXTENTS[:2])


@pytest.mark.parametrize("call, message", [
    (lambda f, r: roi_align(f[0], r, 7), "must be 4-D"),
    (lambda f, r: roi_align(f, r[:, :4], 7), "rois must be [K, 5]"),
    (lambda f, r: roi_align(f, r, 7, 1.0, -1), "sampling_ratio must be >= 0"),
    (lambda f, r: roi_align(f, r + torch.tensor([2.0, 0, 0, 0, 0]), 7), "batch indices span [2, 3]"),
    (lambda f, r: roi_align(f, r.double(), 7), "rois must be torch.float32 for torch.float32 features, got "
                                                "torch.float64"),
    (lambda f, r: roi_align(f, r.half(), 7), "rois must be torch.float32 for torch.float32 features, got "
                                              "torch.float16 (float16 box corners >= 1024 px move in 1-pixel steps)"),
    (lambda f, r: roi_align(f.double(), r, 7), "rois must be torch.float64 for torch.float64 features"),
    (lambda f, r: multilevel_roi_align([f, f.double()], r, 7, [0.25, 0.125]), "must share the dtype of map 0"),
    (lambda f, r: roi_align(f.half(), r, 7), "supports"),
    (lambda f, r: roi_align(f, r, 0), "output size must be positive"),
    (lambda f, r: roi_align(f, r, 7, mode="median"), "mode must be"),
    (lambda f, r: multilevel_roi_align([f, f[:, :2]], r, 7, [0.25, 0.125]), "batch/channels"),
    (lambda f, r: multilevel_roi_align([f, f], r, 7, [0.25]), "1 spatial scales for 2 feature maps"),
])
def test_bad_input_is_refused_with_a_clear_message(call, message):
    feats = torch.randn(2, 4, 8, 8)
    rois = torch.tensor([[0, 1.0, 1, 5, 5], [1, 0, 0, 3, 3]])
    with pytest.raises(ValueError) as info:
        call(feats, rois)
    assert message in str(info.value)


def test_native_library_checks_its_own_arguments():
    """Callers other than Python (ORT, TensorRT) rely on the library's own checks."""
    lib = native.cpu_library()
    feats = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[3.0, 1, 1, 5, 5]])
    out = torch.empty(1, 2, 2, 2)
    args = (native.pointers([feats.data_ptr()]), rois.data_ptr(), 1)
    levels = native.levels_struct(1, 2, [(8, 8)], [1.0])
    st = lib.mrd_roi_align_forward_cpu(0, levels, *args, native.pool_params((2, 2), 0, False, "avg"), out.data_ptr(), 1)
    assert lib.mrd_status_message(st).decode() == "a roi's batch index is outside [0, batch)"
    st = lib.mrd_roi_align_forward_cpu(0, levels, *args, native.pool_params((2, 2), -1, False, "avg"), out.data_ptr(), 1)
    assert st == 1
    two = native.levels_struct(1, 2, [(8, 8), (4, 4)], [0.25, 0.5])  # not consecutive FPN levels
    st = lib.mrd_roi_align_forward_cpu(0, two, *args, native.pool_params((2, 2), 0, False, "avg"), out.data_ptr(), 1)
    assert st == 1


def test_missing_library_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "library_path", lambda kind: tmp_path / f"_roi_align_{kind}.so")
    with pytest.raises(NativeLibraryError, match="not found at .*reinstall the package"):
        native._load("cpu")


def test_custom_ops_pass_opcheck_and_export():
    feats, rois, _ = _fpn_inputs(batch=2, k=20, seed=11)
    feats = [f.requires_grad_() for f in feats]
    args = (rois, feats, 7, 7, SCALES, 2, False, "avg", 224.0, 4, 1e-6)
    torch.library.opcheck(torch.ops.maskrcnn_deploy.multilevel_roi_align.default, args)
    extents = torch.tensor([[200.0, 320.0], [96.0, 128.0]])
    torch.library.opcheck(torch.ops.maskrcnn_deploy.multilevel_roi_align.default, args + (extents,))
    torch.library.opcheck(torch.ops.maskrcnn_deploy.roi_align.default, (feats[0], rois, 7, 7, 0.25, 0, True, "max"))

    class Pool(torch.nn.Module):
        def forward(self, r, p2, p3, p4, p5):
            return multilevel_roi_align([p2, p3, p4, p5], r, 7, SCALES, 2, False)

    program = torch.export.export(Pool(), (rois, *[f.detach() for f in feats]))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert "maskrcnn_deploy.multilevel_roi_align.default" in targets


def test_model_pools_through_the_native_op(monkeypatch):
    from maskrcnn_deploy.model.config import resnet18_fpn
    from maskrcnn_deploy.model.mask_rcnn import MaskRCNN
    calls = []
    real = torch.ops.maskrcnn_deploy.multilevel_roi_align.default
    model = MaskRCNN(resnet18_fpn(num_classes=3, min_size=96, max_size=128, box_score_thresh=0.0)).eval()
    import maskrcnn_deploy.plugins.torch_ops as ops
    monkeypatch.setattr(ops, "multilevel_roi_align_op", lambda *a: calls.append(a[2]) or real(*a))
    with torch.no_grad():
        model([torch.rand(3, 96, 120)])
    assert calls and set(calls) <= {7, 14}


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH: the CUDA library is not built here")
def test_cuda_library_was_built_and_loads():
    lib = native.cuda_library()  # loads without a GPU: cudart is linked statically, used only on launch
    levels = native.levels_struct(1, 2, [(8, 8)], [1.0])
    st = lib.mrd_roi_align_forward_cuda(0, levels, native.pointers([0]), None, 0,
                                        native.pool_params((7, 7), 2, False, "avg"), None, None)
    assert st == 0  # nothing to launch
    st = lib.mrd_roi_align_forward_cuda(2, levels, native.pointers([0]), None, 1,
                                        native.pool_params((7, 7), 2, False, "avg"), None, None)
    assert lib.mrd_status_message(st).decode() == "dtype not supported on this device"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("aligned, sampling", [(False, 2), (True, 0)])
def test_cuda_matches_cpu_float32_and_float16(aligned, sampling):
    feats, rois, _ = _fpn_inputs(seed=12)
    cpu = multilevel_roi_align(feats, rois, 7, SCALES, sampling, aligned)
    gpu = multilevel_roi_align([f.cuda() for f in feats], rois.cuda(), 7, SCALES, sampling, aligned)
    assert (gpu.cpu() - cpu).abs().max() <= 1e-5
    extents = torch.tensor([[128.0, 320.0], [64.0, 96.0], [256.0, 160.0]])
    cpu_covered = multilevel_roi_align(feats, rois, 7, SCALES, sampling, aligned, extents=extents)
    gpu_covered = multilevel_roi_align([f.cuda() for f in feats], rois.cuda(), 7, SCALES, sampling, aligned,
                                       extents=extents.cuda())
    assert (gpu_covered.cpu() - cpu_covered).abs().max() <= 1e-5 and not torch.equal(cpu_covered, cpu)
    # float16 features take float32 rois (docs/ops.md): corners are not rounded to float16
    half = multilevel_roi_align([f.cuda().half() for f in feats], rois.cuda(), 7, SCALES, sampling, aligned)
    assert half.dtype == torch.float16 and (half.float().cpu() - cpu).abs().max() <= 0.1
    with pytest.raises(ValueError, match="rois must be torch.float32 for torch.float16 features"):
        multilevel_roi_align([f.cuda().half() for f in feats], rois.cuda().half(), 7, SCALES, sampling, aligned)
    leaves = [f.cuda().requires_grad_() for f in feats]
    g = torch.randn_like(gpu)
    grads = torch.autograd.grad(multilevel_roi_align(leaves, rois.cuda(), 7, SCALES, sampling, aligned), leaves, g)
    cpu_leaves = [f.clone().requires_grad_() for f in feats]
    ref = torch.autograd.grad(multilevel_roi_align(cpu_leaves, rois, 7, SCALES, sampling, aligned), cpu_leaves, g.cpu())
    assert max((a.cpu() - b).abs().max().item() for a, b in zip(grads, ref)) <= 1e-4
    for mode in ("avg", "max"):
        single = roi_align(feats[0].cuda(), rois.cuda(), 14, 0.25, sampling, aligned, mode)
        assert (single.cpu() - roi_align(feats[0], rois, 14, 0.25, sampling, aligned, mode)).abs().max() <= 1e-5
