"""torchvision files from the command line, with no Python: `export`, `predict`, `eval`, `bench` and `check`
read a bare `maskrcnn_resnet50_fpn(_v2)` state dict (issue 21: they used to ask for `config=`)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn_v2

from maskrcnn_deploy.export.graph_io import read_graph_info
from maskrcnn_deploy.runtime import load
from maskrcnn_deploy.runtime.cli import main

from photos import write_mixed_photos
from test_checkpoint_sources import _randomise_norms, _tv_v1


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    paths = write_mixed_photos(tmp_path_factory.mktemp("photos"))
    keep = {p.stem.split("_")[0] for p in paths[:2]}
    for p in paths:
        if p.stem.split("_")[0] not in keep:
            p.unlink()
    return paths[0].parent


TOP = 50  # compare the highest scores: a random model's 100-detection cut falls among near-ties


def _torchvision_scores(model, photo) -> np.ndarray:
    """torchvision's own eager detections' scores (sorted) on one photo."""
    from maskrcnn_deploy.model.data.coco import load_image

    with torch.no_grad():
        return np.sort(model([load_image(photo)])[0]["scores"].numpy())


def test_a_torchvision_v1_file_exports_and_predicts_without_a_config(tmp_path, photos, capsys):
    """FrozenBN with eps 1e-5 (an ImageNet-only backbone): the file cannot say so, --bn-eps does, and the
    export records the choice."""
    torch.manual_seed(0)
    tv = _tv_v1(3, frozen_eps=1e-5)
    _randomise_norms(tv)
    torch.save({"model": tv.state_dict(), "epoch": 12}, tmp_path / "m.pth")
    assert main(["export", str(tmp_path / "m.pth"), "-o", str(tmp_path / "m.onnx"), "--input-size", "256x256",
                 "--bn-eps", "1e-5"]) == 0
    info = read_graph_info(onnx.load(str(tmp_path / "m.onnx")), "m.onnx")
    assert info["checkpoint"] == {"source": "torchvision-v1", "bn_eps": 1e-5}
    assert info["config"]["num_classes"] == 3 and info["config"]["norm"] == "frozen_bn"

    assert main(["predict", str(tmp_path / "m.pth"), str(photos), "--out", str(tmp_path / "pred"),
                 "--bn-eps", "1e-5", "--score-thresh", "0"]) == 0
    assert len(list((tmp_path / "pred").glob("*.png"))) == len(list(photos.iterdir()))
    photo = sorted(photos.iterdir())[0]
    ours = np.sort(load(tmp_path / "m.pth", bn_eps=1e-5).predict([photo])[0]["scores"])
    theirs = _torchvision_scores(tv, photo)
    assert len(theirs) >= TOP and len(ours) == len(theirs)
    np.testing.assert_allclose(ours[-TOP:], theirs[-TOP:], atol=1e-4)
    default = np.sort(load(tmp_path / "m.pth").predict([photo])[0]["scores"])  # eps 0: another model
    assert np.abs(default[-TOP:] - theirs[-TOP:]).max() > 1e-3


def test_a_torchvision_v2_file_is_recognised_with_its_class_count(tmp_path, photos, capsys):
    torch.manual_seed(1)
    tv = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=4).eval()
    torch.save(tv.state_dict(), tmp_path / "v2.pth")
    assert main(["predict", str(tmp_path / "v2.pth"), str(photos), "--out", str(tmp_path / "pred")]) == 0
    predictor = load(tmp_path / "v2.pth")
    assert predictor.config.num_classes == 4 and predictor.config.norm == "bn"
    photo = sorted(photos.iterdir())[0]
    ours = np.sort(predictor.predict([photo])[0]["scores"])
    theirs = _torchvision_scores(tv, photo)
    assert len(theirs) >= TOP and len(ours) == len(theirs)
    np.testing.assert_allclose(ours[-TOP:], theirs[-TOP:], atol=1e-4)
    assert main(["predict", str(tmp_path / "v2.pth"), str(photos), "--out", str(tmp_path / "p2"),
                 "--source", "torchvision-v1"]) == 2  # a forced source that does not fit: one line, exit 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit" in err[0], err
