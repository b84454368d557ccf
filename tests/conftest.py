"""Fixtures shared by several test files: seeded ResNet-18-FPN checkpoints and their ONNX graphs.

Export is the suite's biggest cost (10-40 s a graph on 2 cores), so each model below is built once per session
and each of its graphs exported once, on first use. Tests must not modify the files (copy them to tmp_path first).

- `small_r18`: 4 classes, test size 128 / 160, default heads (test_export_onnx, test_torch_free, test_fp16,
  test_onnxruntime_op, test_bench_cli).
- `small_heads_r18`: seeded_models.SMALL_HEADS (BatchNorm folded at export, narrow heads, 20 detections) at
  128 / 160 (test_calibration, test_robustness, test_ray, test_triton_package, test_diverge).
- `cpu_r18`: seeded_models.CPU_HEADS (the small heads at 128 / 192, fewer RoIs), its standard-ops graph and
  synthetic scenes (test_openvino, test_cpu_int8).
"""

from __future__ import annotations

from pathlib import Path

import pytest

NUM_CLASSES = 4


class SeededR18:
    """A seeded R18-FPN checkpoint (`root`/r18.pt, confident masks) of `config` and, lazily, its graphs
    (`graph(flavour, dynamic)`), under one session folder."""

    def __init__(self, root: Path, config):
        from maskrcnn_deploy.model.checkpoint import save_checkpoint

        from seeded_models import seeded_model

        self.root = root
        self.config = config
        self.checkpoint = save_checkpoint(root / "r18.pt", seeded_model(config), config)
        self._graphs: dict[tuple[str, bool], Path] = {}

    def graph(self, flavour: str = "custom", dynamic: bool = False) -> Path:
        """The static (the config's default canvas) or dynamic graph with the custom or standard-ops RoIAlign,
        `root`/r18_{flavour}_{static|dynamic}.onnx."""
        from maskrcnn_deploy.export.onnx_export import ExportOptions, export_checkpoint

        key = (flavour, dynamic)
        if key not in self._graphs:
            path = self.root / f"r18_{flavour}_{'dynamic' if dynamic else 'static'}.onnx"
            export_checkpoint(self.checkpoint, path, ExportOptions(roi_align=flavour, dynamic=dynamic))
            self._graphs[key] = path
        return self._graphs[key]


@pytest.fixture(scope="session")
def small_r18(tmp_path_factory) -> SeededR18:
    from maskrcnn_deploy.model.config import resnet18_fpn

    config = resnet18_fpn(NUM_CLASSES, min_size=128, max_size=160, box_score_thresh=0.05)
    return SeededR18(tmp_path_factory.mktemp("small_r18"), config)


@pytest.fixture(scope="session")
def small_heads_r18(tmp_path_factory) -> SeededR18:
    from maskrcnn_deploy.model.config import resnet18_fpn

    from seeded_models import SMALL_HEADS

    return SeededR18(tmp_path_factory.mktemp("small_heads_r18"), resnet18_fpn(NUM_CLASSES, **SMALL_HEADS))


@pytest.fixture(scope="session")
def cpu_r18(tmp_path_factory) -> dict:
    """The CPU_HEADS model, its standard-ops static graph (r18_standard_static.onnx, 128x192 canvas) and synthetic
    scenes (seed 3, 150x190: `train` json of 4, `val` json and `scenes` folder of 2)."""
    from maskrcnn_deploy.model.config import resnet18_fpn
    from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset

    from seeded_models import CPU_HEADS

    model = SeededR18(tmp_path_factory.mktemp("cpu_r18"), resnet18_fpn(NUM_CLASSES, **CPU_HEADS))
    paths = make_synthetic_dataset(model.root / "data", num_train=4, num_val=2, seed=3, image_size=(150, 190))
    return {"model": model, "ckpt": model.checkpoint, "graph": model.graph("standard"), "train": paths["train"],
            "val": paths["val"], "scenes": model.root / "data" / "val"}
