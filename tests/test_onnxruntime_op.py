"""The custom MultiLevelRoIAlign node in ONNX Runtime: the C kernel through ctypes on numpy buffers.

Equality with the PyTorch op (same kernel: outputs equal to 0) on random and adversarial rois, an exported
deploy graph whose raw outputs equal those of the same graph run through the former torch-wrapped callback,
and a subprocess that runs a session without ever importing torch.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from maskrcnn_deploy.export.deploy_model import OUTPUT_NAMES
from maskrcnn_deploy.export.graph_io import read_onnx
from maskrcnn_deploy.plugins import native, onnxruntime_op
from maskrcnn_deploy.plugins.onnxruntime_op import custom_op_library_path, load_session, run_session
from maskrcnn_deploy.plugins.op_spec import DOMAIN, OP_TYPE, is_custom_roi_align
from maskrcnn_deploy.plugins.torch_ops import fpn_levels, multilevel_roi_align_op
from maskrcnn_deploy.runtime.backend.pytorch import DeployTorchPredictor

SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
IMAGE = (320, 448)  # (H, W) of the input the feature maps belong to


def roi_node_model(feature_shapes: list[tuple[int, ...]], op_type: str = "MultiLevelRoIAlign", extents: bool = False,
                   **attrs) -> onnx.ModelProto:
    """A graph with one custom node: rois [K,5] and P2..P5 (static shapes) [and extents [B,2]] -> pooled [K,C,oh,ow]."""
    attrs = {"output_height": 7, "output_width": 7, "sampling_ratio": 2, "aligned": 0, "spatial_scales": SCALES,
             "canonical_scale": 224.0, "canonical_level": 4, "level_eps": 1e-6, "mode": "avg", **attrs}
    names = ["rois", "p2", "p3", "p4", "p5"] + (["extents"] if extents else [])
    node = helper.make_node(op_type, names, ["pooled"], domain="maskrcnn_deploy", **attrs)
    inputs = [helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["K", 5])]
    inputs += [helper.make_tensor_value_info(f"p{i + 2}", TensorProto.FLOAT, list(s))
               for i, s in enumerate(feature_shapes)]
    if extents:
        inputs.append(helper.make_tensor_value_info("extents", TensorProto.FLOAT, [feature_shapes[0][0], 2]))
    graph = helper.make_graph([node], "roi", inputs, [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("maskrcnn_deploy", 1)])
    model.ir_version = 10
    return model


def features(rng: np.random.Generator, batch: int = 2, channels: int = 16) -> list[np.ndarray]:
    """P2..P5 float32 [B,C,H/2^l,W/2^l] for an IMAGE-sized input."""
    return [rng.standard_normal((batch, channels, IMAGE[0] // 2 ** (i + 2), IMAGE[1] // 2 ** (i + 2)),
                                dtype=np.float32) for i in range(4)]


def adversarial_rois(rng: np.random.Generator, batch: int = 2) -> np.ndarray:
    """[K,5] rois: random boxes from 4 to 400 px (every FPN level), and boxes that are empty, points,
    inverted (negative area), off the image, crossing its border, huge, at negative coordinates."""
    n = 200
    xy = rng.uniform(-20, max(IMAGE) + 20, (n, 2))
    wh = np.exp(rng.uniform(np.log(4), np.log(400), (n, 2)))
    random = np.concatenate([rng.integers(0, batch, (n, 1)), xy, xy + wh], 1)
    H, W = IMAGE
    special = [[0, 10, 10, 10, 10], [1, 30, 40, 30, 90], [0, 50, 50, 50.5, 50.5],  # empty, zero width, tiny
               [1, 80, 80, 40, 20], [0, 5, 5, 1, 100],  # inverted: negative area, negative width
               [0, W + 50, H + 50, W + 300, H + 400], [1, -500, -400, -100, -50],  # off the image
               [0, W - 30, H - 30, W + 30, H + 30], [1, -40, -40, 60, 60],  # crossing the border
               [0, -1e6, -1e6, 1e6, 1e6], [1, 0, 0, 1e5, 3], [0, -3e4, 10, -2.9e4, 9e3]]  # huge
    special = np.asarray(special)
    special[:, 0] %= batch
    return np.concatenate([random, special]).astype(np.float32)


def torch_pooled(rois: np.ndarray, feats: list[np.ndarray], oh: int = 7, ow: int = 7, sampling_ratio: int = 2,
                 aligned: int = 0, mode: str = "avg", extents: np.ndarray | None = None) -> np.ndarray:
    """The PyTorch op on the same inputs (the reference)."""
    out = multilevel_roi_align_op(torch.from_numpy(rois), [torch.from_numpy(f) for f in feats], oh, ow, SCALES,
                                  sampling_ratio, bool(aligned), mode, 224.0, 4, 1e-6,
                                  None if extents is None else torch.from_numpy(extents))
    return out.numpy()


@pytest.mark.parametrize("attrs", [{}, {"aligned": 1, "sampling_ratio": 0}])
def test_the_node_takes_each_images_extent(attrs):
    """With the optional extents input the node samples only each image's covered part of the maps, like the
    PyTorch op; a graph exported without it (5 inputs) keeps pooling the whole maps."""
    rng = np.random.default_rng(7)
    feats, rois = features(rng), adversarial_rois(rng)
    rois = rois[np.abs(rois[:, 1:]).max(1) <= 1e4]
    extents = np.array([[160.0, 448.0], [320.0, 96.0]], np.float32)  # (height, width) each image covers
    inputs = {"rois": rois, **{f"p{i + 2}": f for i, f in enumerate(feats)}}
    covered = load_session(roi_node_model([f.shape for f in feats], extents=True, **attrs)).run(
        None, {**inputs, "extents": extents})[0]
    whole = load_session(roi_node_model([f.shape for f in feats], **attrs)).run(None, inputs)[0]
    args = (attrs.get("sampling_ratio", 2), attrs.get("aligned", 0))
    assert np.array_equal(covered, torch_pooled(rois, feats, 7, 7, *args, extents=extents))
    assert np.array_equal(whole, torch_pooled(rois, feats, 7, 7, *args))
    assert (np.abs(covered - whole).max(axis=(1, 2, 3)) > 1e-3).sum() > 20


@pytest.mark.parametrize("attrs", [{}, {"aligned": 1, "sampling_ratio": 0}, {"mode": "max", "aligned": 1},
                                   {"output_height": 14, "output_width": 5, "sampling_ratio": 3}])
def test_the_node_equals_the_pytorch_op_on_adversarial_rois(attrs):
    rng = np.random.default_rng(len(attrs))
    feats, rois = features(rng), adversarial_rois(rng)
    if attrs.get("sampling_ratio") == 0:
        # kernel limits outside this op's Python side, the same through either caller: adaptive sampling on a
        # 2e6 px roi asks for ~1e10 samples per bin (allocation fails); a roi inverted on both axes (positive
        # area, so it has a level) gets a negative sampling grid with aligned=1, which the kernel mishandles
        both_inverted = (rois[:, 3] < rois[:, 1]) & (rois[:, 4] < rois[:, 2])
        rois = rois[~both_inverted & (np.abs(rois[:, 1:]).max(1) <= 1e5)]
    session = load_session(roi_node_model([f.shape for f in feats], **attrs))
    pooled = session.run(None, {"rois": rois, **{f"p{i + 2}": f for i, f in enumerate(feats)}})[0]
    reference = torch_pooled(rois, feats, attrs.get("output_height", 7), attrs.get("output_width", 7),
                             attrs.get("sampling_ratio", 2), attrs.get("aligned", 0), attrs.get("mode", "avg"))
    assert pooled.dtype == np.float32 and pooled.shape == reference.shape
    assert np.array_equal(pooled, reference)  # same kernel: equal to 0, not to a tolerance
    levels = fpn_levels(torch.from_numpy(rois), SCALES).numpy()
    assert set(levels.tolist()) == {-1, 0, 1, 2, 3}  # every level and the undefined one are exercised
    assert not pooled[levels == -1].any() and np.abs(pooled[levels >= 0]).sum() > 0


def test_no_rois_and_non_contiguous_inputs():
    rng = np.random.default_rng(5)
    feats = features(rng, batch=1, channels=4)
    session = load_session(roi_node_model([f.shape for f in feats]))
    empty = session.run(None, {"rois": np.zeros((0, 5), np.float32), **{f"p{i + 2}": f for i, f in enumerate(feats)}})
    assert empty[0].shape == (0, 4, 7, 7)
    rois = adversarial_rois(rng, batch=1)
    strided = np.asfortranarray(rois)  # the numpy entry point copies what is not C-contiguous float32
    direct = native.forward_cpu(strided, feats, 7, 7, SCALES, 2, False, "avg", 224.0, 4, 1e-6, num_threads=1)
    assert np.array_equal(direct, torch_pooled(rois, feats))


def test_the_numpy_entry_point_refuses_what_the_kernels_cannot_take():
    feats = features(np.random.default_rng(0), batch=1, channels=2)
    rois = np.array([[0, 1, 1, 30, 30]], np.float32)
    call = lambda r, f, scales=SCALES, mode="avg": native.forward_cpu(r, f, 7, 7, scales, 2, False, mode,  # noqa: E731
                                                                      224.0, 4, 1e-6)
    with pytest.raises(ValueError, match=r"rois must be \[K, 5\]"):
        call(rois[:, :4], feats)
    with pytest.raises(ValueError, match="map 0 has"):
        call(rois, feats[:3] + [feats[3][:, :1]])
    with pytest.raises(ValueError, match="3 spatial scales for 4"):
        call(rois, feats, SCALES[:3])
    with pytest.raises(native.NativeLibraryError, match="batch index"):  # the kernel's own checks
        call(np.array([[1, 1, 1, 30, 30]], np.float32), feats)
    with pytest.raises(native.NativeLibraryError, match="RoIAlign forward failed"):
        call(rois, feats, mode="median")
    with pytest.raises(native.NativeLibraryError, match="RoIAlign forward failed"):
        call(rois, feats, [1 / 4, 1 / 8, 1 / 8, 1 / 32])  # not consecutive powers of two


def test_a_session_never_imports_torch(tmp_path):
    """load_session/run_session on a graph of only the custom node, in a fresh interpreter."""
    rng = np.random.default_rng(2)
    feats, rois = features(rng, batch=1, channels=8), adversarial_rois(rng, batch=1)
    path = tmp_path / "roi.onnx"
    onnx.save(roi_node_model([f.shape for f in feats]), str(path))
    np.savez(tmp_path / "inputs.npz", rois=rois, **{f"p{i + 2}": f for i, f in enumerate(feats)})
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import onnx
        from maskrcnn_deploy.plugins.onnxruntime_op import load_session
        session = load_session(onnx.load({str(path)!r}))
        feed = dict(np.load({str(tmp_path / 'inputs.npz')!r}))
        pooled = session.run(None, feed)[0]
        np.save({str(tmp_path / 'pooled.npy')!r}, pooled)
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not loaded, loaded
        print("torch-free", pooled.shape)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"torch-free {(len(rois), 8, 7, 7)}"
    assert np.array_equal(np.load(tmp_path / "pooled.npy"), torch_pooled(rois, feats))


def test_run_session_never_imports_torch(tmp_path):
    """run_session (the Ctrl-C deferral around session.run) on a graph with the custom node, in a fresh
    interpreter: a tiny graph images -> fixed rois and P2..P5 pooled from the images themselves."""
    script = textwrap.dedent("""
        import sys
        import numpy as np
        from onnx import TensorProto, helper
        from maskrcnn_deploy.plugins.onnxruntime_op import load_session, run_session
        rois = helper.make_tensor("rois", TensorProto.FLOAT, [2, 5], [0, 1, 1, 30, 30, 0, 0, 0, 60, 50])
        nodes = [helper.make_node("Constant", [], ["rois"], value=rois)]
        nodes += [helper.make_node("AveragePool", ["images"], [f"p{i + 2}"], kernel_shape=[2 ** i, 2 ** i],
                                   strides=[2 ** i, 2 ** i]) for i in range(4)]
        nodes.append(helper.make_node("MultiLevelRoIAlign", ["rois", "p2", "p3", "p4", "p5"], ["pooled"],
                                      domain="maskrcnn_deploy", output_height=7, output_width=7, sampling_ratio=2,
                                      aligned=0, spatial_scales=[1.0, 0.5, 0.25, 0.125], canonical_scale=224.0,
                                      canonical_level=4, level_eps=1e-6, mode="avg"))
        nodes.append(helper.make_node("Identity", ["image_sizes"], ["sizes_out"]))
        graph = helper.make_graph(nodes, "g", [
            helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64]),
            helper.make_tensor_value_info("image_sizes", TensorProto.FLOAT, [1, 2])],
            [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None),
             helper.make_tensor_value_info("sizes_out", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                        helper.make_opsetid("maskrcnn_deploy", 1)])
        model.ir_version = 10
        images = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
        out = run_session(load_session(model), images, np.array([[64, 64]], np.float32))
        assert out["pooled"].shape == (2, 3, 7, 7) and np.abs(out["pooled"]).sum() > 0
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not loaded, loaded
        print("torch-free")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "torch-free"


# ---- an exported deploy graph ------------------------------------------------------------------------------------

def _torch_wrapped(rois, p2, p3, p4, p5, extents, **attr) -> np.ndarray:
    """The op's callback before it called the kernel through ctypes: numpy inputs wrapped as torch tensors
    and passed to the PyTorch op."""
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    scales = [float(s) for s in attr["spatial_scales"].split()]
    return multilevel_roi_align_op(as_tensor(rois), [as_tensor(p) for p in (p2, p3, p4, p5)], attr["output_height"],
                                   attr["output_width"], scales, attr["sampling_ratio"], bool(attr["aligned"]),
                                   attr["mode"], attr["canonical_scale"], attr["canonical_level"],
                                   attr["level_eps"], as_tensor(extents) if len(extents) else None).numpy()


@contextlib.contextmanager
def torch_wrapped_callback():
    """Run the registered PyOp with `_torch_wrapped` as its body inside the block (the hooker looks the body
    up on every call). One op, swapped: onnxruntime-extensions crashes when a second PyOp is defined after a
    session was made and that session is then freed."""
    from onnxruntime_extensions import _ocos

    custom_op_library_path()
    op = next(o for o in _ocos.Opdef._odlist.values() if o.op_type == f"{DOMAIN}::{OP_TYPE}")
    assert op.body is onnxruntime_op._multilevel_roi_align
    calls = []
    op.body = lambda *inputs, **attr: calls.append(1) or _torch_wrapped(*inputs, **attr)
    try:
        yield calls
    finally:
        op.body = onnxruntime_op._multilevel_roi_align


@pytest.fixture(scope="module")
def r18_graph(small_r18):
    """A small ResNet-18-FPN checkpoint and its static custom-node graph (128x160 canvas)."""
    return small_r18.checkpoint, small_r18.graph("custom"), small_r18.config  # tests/conftest.py


def _batch(cfg, canvas: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Two seeded 0-1 images (120x150, 100x90) mean-padded onto the canvas: [2,3,H,W] and sizes [2,2]."""
    rng = np.random.default_rng(3)
    batch = np.broadcast_to(np.asarray(cfg.image_mean, np.float32).reshape(1, 3, 1, 1), (2, 3, *canvas)).copy()
    sizes = np.array([[120, 150], [100, 90]], np.float32)
    for slot, (h, w) in zip(batch, sizes.astype(int)):
        slot[:, :h, :w] = rng.random((3, h, w), dtype=np.float32)
    return batch, sizes


def test_an_exported_graph_gives_the_same_raw_outputs(r18_graph):
    checkpoint, path, cfg = r18_graph
    model = read_onnx(path)
    canvas = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[2:])
    session = load_session(model, threads=2)
    batch_size = session.get_inputs()[0].shape[0]
    images, sizes = _batch(cfg, canvas)
    images, sizes = images[:batch_size], sizes[:batch_size]
    ctypes_path = run_session(session, images, sizes)

    with torch_wrapped_callback() as calls:
        torch_path = run_session(session, images, sizes)
    assert sum(is_custom_roi_align(n) for n in model.graph.node) == len(calls) == 2  # box head and mask head
    assert set(ctypes_path) == set(OUTPUT_NAMES) and ctypes_path["num_detections"].sum() > 0
    for name in OUTPUT_NAMES:  # the same graph, the op's callback before and after: identical
        assert np.array_equal(ctypes_path[name], torch_path[name]), name

    deploy = DeployTorchPredictor(checkpoint, input_size=canvas).run_raw(torch.from_numpy(images),
                                                                         torch.from_numpy(sizes))
    n = int(deploy["num_detections"].sum())
    assert n > 0 and np.array_equal(ctypes_path["num_detections"], deploy["num_detections"])
    np.testing.assert_array_equal(ctypes_path["labels"], deploy["labels"])
    # ONNX Runtime's convolutions against PyTorch's: float noise, amplified x20 in the mask logits (seeded_model)
    for name, atol in (("boxes", 1e-3), ("scores", 1e-5), ("masks", 2e-3)):
        np.testing.assert_allclose(ctypes_path[name], deploy[name], atol=atol, rtol=0, err_msg=name)
