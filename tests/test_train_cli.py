"""The training loop and the command line: data synth -> train (interrupted, resumed) -> eval -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from maskrcnn_deploy.model.checkpoint import load_checkpoint
from maskrcnn_deploy.model.data.coco import CocoDetectionDataset
from maskrcnn_deploy.model.train import (
    IterationBatchSampler,
    TrainConfig,
    hflip,
    lr_factor,
    synthetic_model_config,
    train,
)
from maskrcnn_deploy.runtime.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TINY = dict(min_size=(64, 80), max_size=80, rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
            rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100, box_batch_size_per_image=32,
            fpn_channels=64, mask_head_channels=64, box_fc_dim=128)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    assert main(["data", "synth", "--out", str(out), "--train", "8", "--val", "4", "--size", "96"]) == 0
    return out


def _config(data: Path, out: Path, iterations: int) -> TrainConfig:
    return TrainConfig(train_json=str(data / "train.json"), out_dir=str(out), iterations=iterations, batch_size=2,
                       lr=0.01, warmup_iters=2, lr_steps=(0.5,), checkpoint_every=3, num_workers=0, log_every_s=0)


def test_hflip_mirrors_boxes_and_masks():
    image = torch.arange(3 * 5, dtype=torch.float32).reshape(1, 3, 5).expand(3, 3, 5)
    masks = torch.zeros(1, 3, 5, dtype=torch.uint8)
    masks[0, :, 0:2] = 1  # columns 0-1 -> box x 0..2
    target = {"boxes": torch.tensor([[0.0, 0.0, 2.0, 3.0]]), "masks": masks, "labels": torch.tensor([1])}
    flipped_image, flipped = hflip(image, target)
    assert torch.equal(flipped["boxes"], torch.tensor([[3.0, 0.0, 5.0, 3.0]]))
    assert flipped["masks"][0, :, 3:].all() and not flipped["masks"][0, :, :3].any()
    assert torch.equal(flipped_image[..., 0], image[..., -1])
    assert torch.equal(target["boxes"], torch.tensor([[0.0, 0.0, 2.0, 3.0]]))  # input untouched


def test_lr_schedule_warmup_and_steps():
    cfg = TrainConfig(train_json="x", out_dir="y", iterations=100, warmup_iters=10, warmup_factor=0.001,
                      lr_steps=(0.5, 0.8), lr_gamma=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.001)
    assert lr_factor(5, cfg) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(10, cfg) == 1.0 and lr_factor(49, cfg) == 1.0
    assert lr_factor(50, cfg) == pytest.approx(0.1)
    assert lr_factor(80, cfg) == pytest.approx(0.01)
    budgeted = TrainConfig(train_json="x", out_dir="y", iterations=100, warmup_iters=10, lr_steps=(0.5, 0.8),
                           time_limit_s=60.0)
    assert lr_factor(20, budgeted, elapsed_s=29.0) == 1.0
    assert lr_factor(20, budgeted, elapsed_s=30.0) == pytest.approx(0.1)  # half the time budget
    assert lr_factor(85, budgeted, elapsed_s=1.0) == pytest.approx(0.01)  # iterations further along


def test_batch_order_depends_only_on_seed_and_iteration():
    full = list(IterationBatchSampler(10, 4, start=0, total=7, seed=3))
    assert list(IterationBatchSampler(10, 4, start=4, total=7, seed=3)) == full[4:]
    epoch0 = [i for batch in full for i in batch][:10]
    assert sorted(epoch0) == list(range(10))  # each epoch is a permutation
    assert list(IterationBatchSampler(10, 4, start=0, total=7, seed=4)) != full


def test_interrupted_training_resumes_where_it_stopped(data, tmp_path, monkeypatch):
    """Ctrl-C after the checkpoint at iteration 3; running again continues at 3, not at 0.

    (Bitwise equality with an uninterrupted run is not asserted: two uninterrupted CPU runs
    already differ in the last bits, and training amplifies that.)
    """
    from maskrcnn_deploy.model import mask_rcnn

    num_classes = CocoDetectionDataset(data / "train.json").num_classes
    model_config = synthetic_model_config(num_classes, **TINY)
    calls = {"n": 0, "interrupt_at": 5}
    original_forward = mask_rcnn.MaskRCNN.forward

    def counting_forward(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == calls["interrupt_at"]:
            raise KeyboardInterrupt
        return original_forward(self, *args, **kwargs)

    monkeypatch.setattr(mask_rcnn.MaskRCNN, "forward", counting_forward)
    with pytest.raises(KeyboardInterrupt):
        train(_config(data, tmp_path / "b", 6), model_config, resume=False)
    _, _, extra = load_checkpoint(tmp_path / "b" / "last.pt")
    assert extra["iteration"] == 3
    saved_rng = extra["rng_state"]
    at_interrupt = load_checkpoint(tmp_path / "b" / "last.pt")[0].state_dict()

    calls.update(n=0, interrupt_at=-1)
    resumed = train(_config(data, tmp_path / "b", 6), model_config, resume=True)
    assert calls["n"] == 3, f"the resumed run trained {calls['n']} iterations instead of the 3 left"

    model_b, config_b, extra_b = load_checkpoint(resumed)
    assert extra_b["iteration"] == 6 and config_b == model_config
    assert not torch.equal(extra_b["rng_state"], saved_rng)
    moved = max((model_b.state_dict()[k] - v).abs().max().item() for k, v in at_interrupt.items()
                if v.is_floating_point())
    assert moved > 1e-4, "the resumed run did not update the weights"
    summary = json.loads((tmp_path / "b" / "train_summary.json").read_text())
    assert summary["iterations"] == 6 and all(v == v for v in summary["final_losses"].values())


def test_cli_train_eval_predict_and_errors(data, tmp_path, capsys, monkeypatch):
    from maskrcnn_deploy.model import train as train_module

    monkeypatch.setattr(train_module, "synthetic_model_config",
                        lambda num_classes, **o: synthetic_model_config(num_classes, **{**TINY, **o}))
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--iterations", "2", "--batch-size", "2",
                 "--workers", "0", "--eval"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_images"] == 4
    assert set(metrics["bbox"]) >= {"AP", "AP50", "AP75"} and set(metrics["segm"]) >= {"AP", "AP50"}
    assert -1.0 <= metrics["segm"]["AP"] <= 1.0

    checkpoint = run / "model_final.pt"
    preds = tmp_path / "pred"
    assert main(["predict", str(checkpoint), str(data / "val"), "--out", str(preds), "--score-thresh", "0"]) == 0
    pngs = sorted(preds.glob("*.png"))
    assert len(pngs) == 4

    capsys.readouterr()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    assert main(["eval", str(broken), "--data", str(data / "val.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("maskrcnn-deploy: error:") and "broken.pt" in err and len(err.splitlines()) == 1

    assert main(["eval", str(tmp_path / "missing.pt"), "--data", str(data / "val.json")]) == 2
    assert "missing.pt" in capsys.readouterr().err

    # a dataset with other categories than the checkpoint: refused, naming both counts
    other = json.loads((data / "val.json").read_text())
    other["categories"] = other["categories"][:3]
    keep = {c["id"] for c in other["categories"]}
    other["annotations"] = [a for a in other["annotations"] if a["category_id"] in keep]
    (tmp_path / "val").symlink_to(data / "val")
    (tmp_path / "val.json").write_text(json.dumps(other))
    assert main(["eval", str(checkpoint), "--data", str(tmp_path / "val.json")]) == 2
    err = capsys.readouterr().err
    assert "classes" in err and "4" in err

    bad = tmp_path / "bad_images"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    assert main(["predict", str(checkpoint), str(bad), "--out", str(tmp_path / "pred2")]) == 2
    assert "empty.png" in capsys.readouterr().err
