"""Training on a COCO data folder, as `maskrcnn-deploy train` and the demo run it: which annotation file
a `--data` argument means, the model presets, and the recipe's defaults (the loop itself is model/train.py).

    final = train_on_coco(CocoTraining(data="data/synth", out="runs/r18", time_limit_s=900))

Importing this module loads no torch (the command line reads the defaults from `CocoTraining`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from maskrcnn_deploy.common.errors import UsageError

__all__ = ["PRESETS", "CocoTraining", "coco_split", "preset_config", "train_on_coco"]

PRESETS = ("synthetic_r18", "resnet18_fpn", "resnet50_fpn")


def coco_split(data: str | Path, split: str) -> str:
    """The annotation file of `split`: DATA/{split}.json for a folder, DATA itself for a json file;
    UsageError when it is not there."""
    path = Path(data)
    if path.is_dir():
        path = path / f"{split}.json"
    if not path.exists():
        raise UsageError(f"no COCO annotations at {path}; make them with `maskrcnn-deploy data synth --out DIR`")
    return str(path)


@dataclass
class CocoTraining:
    """One training run on a data folder (train.json/val.json) or a train json, and its recipe.

    The defaults are those of `maskrcnn-deploy train`: the ResNet-18-FPN small-image CPU recipe."""

    data: str | Path
    out: str | Path                       # run folder: checkpoints, summary
    preset: str = "synthetic_r18"         # one of PRESETS
    iterations: int = 1150
    batch_size: int = 4
    lr: float = 0.02
    warmup_iters: int = 100
    clip_grad: float = 10.0               # gradient-norm clip, 0 = off
    image_size: list[int] | None = None   # training min sizes (jitter picks one per batch); the last at test time
    max_size: int | None = None
    time_limit_s: float | None = None     # stop (checkpointed) after this many seconds
    checkpoint_every: int = 250
    workers: int = 1
    seed: int = 0
    init: str | None = None               # start from this checkpoint's weights (fine-tuning)
    resume: bool = True                   # continue OUT/last.pt when it is there


def preset_config(preset: str, num_classes: int, image_size: list[int] | None = None,
                  max_size: int | None = None):
    """The MaskRCNNConfig of a preset for `num_classes` (background included), with the image sizes given."""
    from maskrcnn_deploy.model import config as model_config
    from maskrcnn_deploy.model import train as train_module

    presets = {"synthetic_r18": train_module.synthetic_model_config, "resnet18_fpn": model_config.resnet18_fpn,
               "resnet50_fpn": model_config.resnet50_fpn}
    if preset not in presets:
        raise UsageError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    config = presets[preset](num_classes=num_classes)
    if image_size:
        config.min_size = tuple(image_size) if len(image_size) > 1 else image_size[0]
        config.max_size = max_size or max(image_size)
    return config


def train_on_coco(run: CocoTraining) -> Path:
    """Train as `run` says and return the final checkpoint (OUT/model_final.pt); the class count comes
    from the train split's categories."""
    from maskrcnn_deploy.model.data.coco import CocoDetectionDataset
    from maskrcnn_deploy.model.train import TrainConfig, train

    train_json = coco_split(run.data, "train")
    num_classes = CocoDetectionDataset(train_json).num_classes
    config = preset_config(run.preset, num_classes, run.image_size, run.max_size)
    tcfg = TrainConfig(train_json=train_json, out_dir=str(run.out), iterations=run.iterations,
                       batch_size=run.batch_size, lr=run.lr, warmup_iters=run.warmup_iters,
                       clip_grad_norm=run.clip_grad or None, time_limit_s=run.time_limit_s, seed=run.seed,
                       checkpoint_every=run.checkpoint_every, num_workers=run.workers)
    return train(tcfg, model_config=config, resume=run.resume, init_checkpoint=run.init)
