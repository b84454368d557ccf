"""Loading checkpoints (ours with the config embedded, torchvision, Detectron2: see checkpoint_sources.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from maskrcnn_deploy.common.files import atomic_write

from .backbone import FrozenBatchNorm2d
from .checkpoint_sources import (
    SOURCES,
    CheckpointError,
    detect_source,
    detectron2_config,
    detectron2_state_dict,
    read_checkpoint_file,
    torchvision_config,
)
from .config import MaskRCNNConfig
from .mask_rcnn import MaskRCNN

__all__ = ["CheckpointError", "map_legacy_key", "load_torchvision_state_dict", "save_checkpoint",
           "load_checkpoint", "FORMAT", "FORMAT_VERSION"]

FORMAT = "maskrcnn_deploy"
FORMAT_VERSION = 1
_CLS_KEY = "roi_heads.box_predictor.cls_score.weight"


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
    try:
        obj = read_checkpoint_file(path, map_location)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict (state dict or checkpoint)")
    return obj


def load_checkpoint(path: str | os.PathLike, map_location="cpu", config: MaskRCNNConfig | None = None,
                    source: str | None = None, bn_eps: float | None = None
                    ) -> tuple[MaskRCNN, MaskRCNNConfig, dict]:
    """Rebuild (model, config, extras) from any checkpoint in `checkpoint_sources.SOURCES`.

    source: one of SOURCES to skip the guess (the file kind is recognised otherwise). config: the model's
    config instead of the one read from the file (class count, BatchNorm flavour and backbone are read from
    the weights). bn_eps: the backbone's BatchNorm eps for torchvision files (FrozenBN eps 0 vs 1e-5 is not in
    the file). The model is returned in eval mode. Raises CheckpointError with a one-line message; extras
    carry "source".
    """
    path = Path(path)
    if source is not None and source not in SOURCES:
        raise CheckpointError(f"unknown checkpoint source {source!r}; use one of {', '.join(SOURCES)}")
    obj = _read(path, map_location)
    if source is None:
        try:
            source = detect_source(obj, str(path))
        except ValueError as err:
            raise CheckpointError(str(err)) from None
    if source != "maskrcnn-deploy":
        return _load_foreign(path, obj, source, map_location, config, bn_eps)
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
    extra.setdefault("source", "maskrcnn-deploy")
    return model, cfg, extra


def _load_foreign(path: Path, obj: dict, source: str, map_location, config: MaskRCNNConfig | None,
                  bn_eps: float | None) -> tuple[MaskRCNN, MaskRCNNConfig, dict]:
    """A torchvision or Detectron2 file: weights under "model" / "state_dict" or bare."""
    weights = obj.get("model", obj.get("state_dict", obj))
    if not isinstance(weights, dict) or not weights:
        raise CheckpointError(f"{path} has no weights dict (looked at 'model', 'state_dict' and the file itself)")
    try:
        if source == "detectron2":
            cfg = config or detectron2_config(weights, str(path))
            state = detectron2_state_dict(weights)
        else:
            state = {str(k): v for k, v in weights.items()}
            cfg = config or torchvision_config({map_legacy_key(k): v for k, v in state.items()}, source, bn_eps)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    if bn_eps is not None and config is not None:
        cfg = MaskRCNNConfig.from_dict({**cfg.to_dict(), "norm_eps": bn_eps})
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: the {source} weights hold entries that are not arrays")
    model = MaskRCNN(cfg)
    load_torchvision_state_dict(model, state, source=f"{path} ({source})")
    model.eval()
    return model, cfg, {"source": source}


def _looks_like_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())
