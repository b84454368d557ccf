"""Loading torchvision state dicts, and our own checkpoint format (config embedded)."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from maskrcnn_deploy.runtime.files import atomic_write

from .backbone import FrozenBatchNorm2d
from .config import MaskRCNNConfig
from .mask_rcnn import MaskRCNN

__all__ = ["CheckpointError", "map_legacy_key", "load_torchvision_state_dict", "save_checkpoint",
           "load_checkpoint", "FORMAT", "FORMAT_VERSION"]

FORMAT = "maskrcnn_deploy"
FORMAT_VERSION = 1
_CLS_KEY = "roi_heads.box_predictor.cls_score.weight"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model (one-line message)."""


_LEGACY = [
    (re.compile(r"^(roi_heads\.mask_head)\.mask_fcn(\d+)\.(weight|bias)$"),
     lambda m: f"{m[1]}.{int(m[2]) - 1}.0.{m[3]}"),
    (re.compile(r"^(rpn\.head\.conv)\.(weight|bias)$"), lambda m: f"{m[1]}.0.0.{m[2]}"),
    (re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$"), lambda m: f"{m[1]}.0.{m[2]}"),
]


def map_legacy_key(key: str) -> str:
    """Old torchvision names -> current ones (mask_fcn{i+1} -> {i}.0, rpn conv -> conv.0.0, fpn .{i} -> .{i}.0)."""
    for pattern, repl in _LEGACY:
        m = pattern.match(key)
        if m:
            return repl(m)
    return key


def _few(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return f"{shown} (+{len(keys) - n} more)" if len(keys) > n else shown


def load_torchvision_state_dict(model: MaskRCNN, state_dict: dict, source: str = "checkpoint") -> None:
    """Load a `maskrcnn_resnet50_fpn[_v2]` state dict (current or legacy key names) into `model`.

    Raises CheckpointError naming a class-count mismatch, missing/unexpected keys, or shape mismatches.
    """
    sd = {map_legacy_key(k): v for k, v in state_dict.items()}
    own = model.state_dict()
    frozen = {name for name, m in model.named_modules() if isinstance(m, FrozenBatchNorm2d)}
    for k in list(sd):
        if k.endswith(".num_batches_tracked") and k not in own:
            if k.rsplit(".", 1)[0] in frozen:
                del sd[k]
    for k in own:  # BN buffers absent from frozen-BN checkpoints: keep the model's own count
        if k.endswith(".num_batches_tracked") and k not in sd:
            sd[k] = own[k]
    cfg_classes = model.config.num_classes
    if _CLS_KEY in sd and sd[_CLS_KEY].shape[0] != cfg_classes:
        n = sd[_CLS_KEY].shape[0]
        raise CheckpointError(f"{source} has {n} classes ({_CLS_KEY} is {list(sd[_CLS_KEY].shape)}) but the config "
                              f"says {cfg_classes}; pass --num-classes {n} or use a checkpoint with {cfg_classes} classes")
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_few(unexpected)}")
        raise CheckpointError(f"{source} does not fit the model ({model.config.box_head} box head, "
                              f"depth {model.config.backbone_depth}): " + "; ".join(parts))
    bad = [f"{k} {list(sd[k].shape)} vs model {list(own[k].shape)}" for k in own if sd[k].shape != own[k].shape]
    if bad:
        raise CheckpointError(f"{source}: {len(bad)} shape mismatches: {_few(bad)}")
    model.load_state_dict(sd, strict=True)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: MaskRCNNConfig, **extra) -> Path:
    """Write {"format", "format_version", "config", "model", **extra} atomically (temp file + rename)."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config.to_dict(),
               "model": model.state_dict(), **extra}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _read(path: Path, map_location) -> dict:
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (corrupt or truncated?): {first}") from None
    except Exception as err:  # pickle.UnpicklingError and friends
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} could not be loaded safely: {type(err).__name__}: {first}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict (state dict or checkpoint)")
    return obj


def load_checkpoint(path: str | os.PathLike, map_location="cpu", config: MaskRCNNConfig | None = None
                    ) -> tuple[MaskRCNN, MaskRCNNConfig, dict]:
    """Rebuild (model, config, extras) from our checkpoint, or from a bare torchvision state dict + `config`.

    The model is returned in eval mode. Raises CheckpointError with a one-line message.
    """
    path = Path(path)
    obj = _read(path, map_location)
    if "format" in obj:
        if obj["format"] != FORMAT:
            raise CheckpointError(f"{path} has format {obj['format']!r}, expected {FORMAT!r}")
        if obj.get("format_version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{path} is format version {obj['format_version']}; this code reads up to "
                                  f"{FORMAT_VERSION}")
        try:
            cfg = MaskRCNNConfig.from_dict(obj["config"]) if config is None else config
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: bad embedded config: {err}") from None
        state = obj.get("model")
        extra = {k: v for k, v in obj.items() if k not in ("format", "format_version", "config", "model")}
    else:
        state = obj.get("model", obj.get("state_dict", obj)) if not _looks_like_state_dict(obj) else obj
        if not _looks_like_state_dict(state):
            raise CheckpointError(f"{path} is neither a {FORMAT} checkpoint nor a Mask R-CNN state dict "
                                  f"(keys: {_few(sorted(map(str, obj)))})")
        if config is None:
            raise CheckpointError(f"{path} is a bare state dict without a config; pass config= "
                                  f"(e.g. torchvision_v1(num_classes=91))")
        cfg, extra = config, {}
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} has no model state dict")
    model = MaskRCNN(cfg)
    load_torchvision_state_dict(model, state, source=str(path))
    model.eval()
    return model, cfg, extra


def _looks_like_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())
