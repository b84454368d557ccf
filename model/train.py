"""Training loop for Mask R-CNN: SGD with linear warm-up and step decay, horizontal flip,
scale jitter (through the model's `min_size` tuple), progress display, checkpoints that
embed the model config, and resumption from the last checkpoint.

    from maskrcnn_deploy.model.train import TrainConfig, train
    train(TrainConfig(train_json="data/train.json", out_dir="runs/r18", iterations=3000),
          model_config=resnet18_fpn(num_classes=7))
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from maskrcnn_deploy.common.progress import Progress
from maskrcnn_deploy.model.checkpoint import load_checkpoint, save_checkpoint
from maskrcnn_deploy.model.config import MaskRCNNConfig, resnet18_fpn
from maskrcnn_deploy.model.data.coco import AnnotationError, CocoDetectionDataset, collate
from maskrcnn_deploy.model.mask_rcnn import MaskRCNN


@dataclass
class TrainConfig:
    """What to train on, for how long, and how. Iterations count optimizer steps."""

    train_json: str
    out_dir: str
    iterations: int = 3000
    batch_size: int = 4
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 200
    warmup_factor: float = 1e-3
    lr_steps: tuple[float, ...] = (0.75, 0.92)  # fractions of `iterations` where lr *= lr_gamma
    lr_gamma: float = 0.1
    hflip_prob: float = 0.5
    clip_grad_norm: float | None = None
    checkpoint_every: int = 500
    log_every_s: float = 10.0
    time_limit_s: float | None = None  # stop early (and checkpoint) after this much wall time
    seed: int = 0
    num_workers: int = 1
    image_dir: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def synthetic_model_config(num_classes: int, **overrides) -> MaskRCNNConfig:
    """ResNet-18-FPN recipe for the synthetic scenes on a 2-core CPU (bench/train_synthetic.py).

    Departures from the COCO settings, all for CPU time: input scale 96-128 px with jitter,
    128-channel FPN and mask head, BatchNorm in backbone, FPN and mask head (training from
    scratch), fewer proposals and 64 sampled RoIs per image (scenes hold at most six objects).
    """
    recipe = dict(min_size=(96, 112, 128), max_size=128, norm="bn", fpn_norm="bn", head_norm="bn",
                  fpn_channels=128, mask_head_channels=128,
                  rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
                  rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=300, box_batch_size_per_image=64)
    return resnet18_fpn(num_classes, **{**recipe, **overrides})


def hflip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Mirror image [3,H,W], boxes [N,4] (xyxy, pixels) and masks [N,H,W] left-right."""
    width = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    target["boxes"] = boxes
    target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


def lr_factor(iteration: int, cfg: TrainConfig, elapsed_s: float = 0.0) -> float:
    """Multiplier of cfg.lr at `iteration`: linear warm-up, then step decay.

    The decay steps sit at fractions of the run; with a time budget (`time_limit_s`) the run's
    progress is whichever is further along, iterations or wall time, so a budgeted run still
    decays before it is stopped.
    """
    factor = 1.0
    if iteration < cfg.warmup_iters:
        alpha = iteration / cfg.warmup_iters
        factor = cfg.warmup_factor * (1 - alpha) + alpha
    progress = iteration / cfg.iterations
    if cfg.time_limit_s:
        progress = max(progress, elapsed_s / cfg.time_limit_s)
    for step in cfg.lr_steps:
        if progress >= step:
            factor *= cfg.lr_gamma
    return factor


class IterationBatchSampler(torch.utils.data.Sampler):
    """Yields the index lists of iterations `start..total-1`.

    The order depends only on (seed, iteration), so a resumed run sees exactly the
    batches the uninterrupted run would have seen.
    """

    def __init__(self, dataset_len: int, batch_size: int, start: int, total: int, seed: int):
        self.n, self.bs, self.start, self.total, self.seed = dataset_len, batch_size, start, total, seed

    def _epoch_order(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        return torch.randperm(self.n, generator=gen).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        cache: dict[int, list[int]] = {}
        for it in range(self.start, self.total):
            batch = []
            for k in range(it * self.bs, (it + 1) * self.bs):
                epoch, pos = divmod(k, self.n)
                if epoch not in cache:
                    cache = {epoch: self._epoch_order(epoch)}
                batch.append(cache[epoch][pos])
            yield batch

    def __len__(self) -> int:
        return self.total - self.start


def train(cfg: TrainConfig, model_config: MaskRCNNConfig | None = None, resume: bool = True,
          init_checkpoint: str | None = None) -> Path:
    """Train and return the path of the final checkpoint (`out_dir/model_final.pt`).

    With `resume`, an existing `out_dir/last.pt` is continued from its iteration (its
    embedded model config wins). Otherwise the model is built from `model_config`, or
    from `init_checkpoint` when given (fine-tuning).
    """
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path = out_dir / "last.pt"
    torch.manual_seed(cfg.seed)

    dataset = CocoDetectionDataset(cfg.train_json, cfg.image_dir)
    model, model_config, start = _starting_point(cfg, model_config, resume, init_checkpoint, last_path)
    start_iter, optimizer_state, elapsed_before = start.get("iteration", 0), start.get("optimizer"), \
        start.get("elapsed_s", 0.0)
    if model_config.num_classes != dataset.num_classes:
        raise AnnotationError(f"the model has {model_config.num_classes} classes (background included) but "
                              f"{cfg.train_json} has {dataset.num_classes}; build the model with "
                              f"num_classes={dataset.num_classes}")

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)

    def elapsed() -> float:
        """Training wall time in seconds, earlier runs of a resumed training included."""
        return elapsed_before + time.monotonic() - t0

    def save(path: Path, iteration: int) -> None:
        save_checkpoint(path, model, model_config, iteration=iteration, optimizer=optimizer.state_dict(),
                        rng_state=torch.get_rng_state(), train_config=cfg.to_dict(),
                        train_elapsed_s=elapsed(),
                        class_names=list(dataset.class_names), category_ids=list(dataset.category_ids))

    sampler = IterationBatchSampler(len(dataset), cfg.batch_size, start_iter, cfg.iterations, cfg.seed)
    # The loader draws its worker seed from its own generator, so the global RNG (scale jitter,
    # RoI sampling) depends only on the iteration and a resumed run repeats the uninterrupted one.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                         num_workers=cfg.num_workers, generator=torch.Generator())
    progress = Progress(cfg.iterations, "train", interval=cfg.log_every_s, start=start_iter)
    model.train()
    t0 = time.monotonic()
    smoothed: dict[str, float] = {}
    iteration = start_iter
    for images, targets in loader:
        losses, loss = _step(model, optimizer, params, list(images), list(targets), cfg, iteration, elapsed())
        iteration += 1

        for k, v in {"loss": loss, **losses}.items():
            smoothed[k] = 0.9 * smoothed.get(k, v.item()) + 0.1 * v.item()
        info = " ".join(f"{k.replace('loss_', '')} {v:.3f}" for k, v in smoothed.items())
        progress.update(iteration, f"{info} lr {optimizer.param_groups[0]['lr']:.4f}")

        out_of_time = cfg.time_limit_s is not None and elapsed() > cfg.time_limit_s
        if iteration % cfg.checkpoint_every == 0 or iteration == cfg.iterations or out_of_time:
            save(last_path, iteration)
        if out_of_time:
            print(f"time limit {cfg.time_limit_s:.0f} s reached at iteration {iteration}", flush=True)
            break

    final = out_dir / "model_final.pt"
    save(final, iteration)
    _write_summary(out_dir / "train_summary.json", iteration, time.monotonic() - t0, smoothed)
    return final


def _write_summary(path: Path, iterations: int, wall_s: float, smoothed: dict[str, float]) -> None:
    """train_summary.json: iterations done, wall seconds of this run, the smoothed final losses."""
    path.write_text(json.dumps({"iterations": iterations, "wall_s": round(wall_s, 1),
                                "final_losses": {k: round(v, 5) for k, v in smoothed.items()}}, indent=2))


def _starting_point(cfg: TrainConfig, model_config: MaskRCNNConfig | None, resume: bool,
                    init_checkpoint: str | None, last_path: Path) -> tuple[MaskRCNN, MaskRCNNConfig, dict]:
    """(model, config, resume state) to train from: `last_path` when resuming (its config wins; the state
    holds iteration, optimizer and elapsed_s, and the global RNG is restored), else `init_checkpoint`'s
    weights, else a new model of `model_config`."""
    if resume and last_path.exists():
        model, model_config, extra = load_checkpoint(last_path)
        if "rng_state" in extra:
            torch.set_rng_state(extra["rng_state"])
        state = {"iteration": int(extra.get("iteration", 0)), "optimizer": extra.get("optimizer"),
                 "elapsed_s": float(extra.get("train_elapsed_s", 0.0))}
        print(f"resuming {last_path} at iteration {state['iteration']}/{cfg.iterations}", flush=True)
        return model, model_config, state
    if init_checkpoint is not None:
        model, model_config, _ = load_checkpoint(init_checkpoint)
        return model, model_config, {}
    if model_config is None:
        raise ValueError("train: give a model config or an init checkpoint")
    return MaskRCNN(model_config), model_config, {}


def _step(model: MaskRCNN, optimizer: torch.optim.Optimizer, params: list, images: list, targets: list,
          cfg: TrainConfig, iteration: int, elapsed_s: float) -> tuple[dict, torch.Tensor]:
    """One SGD step on a batch (seeded horizontal flips, scheduled lr, clipped gradients) -> (losses, total)."""
    flip_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + iteration)
    for i in range(len(images)):
        if torch.rand((), generator=flip_gen).item() < cfg.hflip_prob:
            images[i], targets[i] = hflip(images[i], targets[i])
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * lr_factor(iteration, cfg, elapsed_s)
    losses = model(images, targets)
    loss = sum(losses.values())
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"loss is {loss.item()} at iteration {iteration} "
                                 f"({ {k: round(v.item(), 4) for k, v in losses.items()} }); "
                                 f"lower --lr or raise --warmup-iters")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.clip_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
    optimizer.step()
    return losses, loss
