"""Fixtures shared by several test files.

`small_r18`: one seeded ResNet-18-FPN checkpoint (4 classes, test size 128 / 160, confident masks) and its ONNX
graphs, each exported once per session on first use. Export is the suite's biggest cost (20-40 s a graph on 2
cores); test_export_onnx, test_torch_free, test_fp16 and test_onnxruntime_op all test this same model, so they
share its files instead of exporting it again. Tests must not modify the files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

NUM_CLASSES = 4


class SmallR18:
    """The checkpoint and, lazily, its graphs (`graph(flavour, dynamic)`), under one session folder."""

    def __init__(self, root: Path):
        from maskrcnn_deploy.model.checkpoint import save_checkpoint
        from maskrcnn_deploy.model.config import resnet18_fpn

        from seeded_models import seeded_model

        self.root = root
        self.config = resnet18_fpn(NUM_CLASSES, min_size=128, max_size=160, box_score_thresh=0.05)
        self.checkpoint = save_checkpoint(root / "r18.pt", seeded_model(self.config), self.config)
        self._graphs: dict[tuple[str, bool], Path] = {}

    def graph(self, flavour: str = "custom", dynamic: bool = False) -> Path:
        """The static (default canvas 128x160) or dynamic graph with the custom or standard-ops RoIAlign."""
        from maskrcnn_deploy.export.onnx_export import ExportOptions, export_checkpoint

        key = (flavour, dynamic)
        if key not in self._graphs:
            path = self.root / f"r18_{flavour}_{'dynamic' if dynamic else 'static'}.onnx"
            export_checkpoint(self.checkpoint, path, ExportOptions(roi_align=flavour, dynamic=dynamic))
            self._graphs[key] = path
        return self._graphs[key]


@pytest.fixture(scope="session")
def small_r18(tmp_path_factory) -> SmallR18:
    return SmallR18(tmp_path_factory.mktemp("small_r18"))
