"""Where a checkpoint comes from, and how its weights become this project's `MaskRCNN`.

Sources (`SOURCES`): this project's own checkpoints, torchvision `maskrcnn_resnet50_fpn` / `_v2` state dicts
(bare or under "model" / "state_dict", current or legacy key names) and Detectron2 Mask R-CNN FPN checkpoints
(model-zoo `.pkl`: {"model": {name: numpy array}, "__author__": ...}; `.pth` from its checkpointer:
{"model": state_dict, "iteration": ...}). `.pkl` files are read by `safe_unpickle`, which builds only numpy
arrays, numpy dtypes and plain containers and refuses anything else before it can run.
"""

from __future__ import annotations

import importlib
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np

from maskrcnn_deploy.common.errors import BadInputError

from .config import MaskRCNNConfig, detectron2_mask_rcnn, torchvision_v1, torchvision_v2

__all__ = ["SOURCES", "CheckpointError", "UnsafePickleError", "safe_unpickle", "read_checkpoint_file", "detect_source",
           "map_detectron2_key", "detectron2_state_dict", "detectron2_config", "torchvision_config"]

SOURCES = ("maskrcnn-deploy", "torchvision-v1", "torchvision-v2", "detectron2")
_CLS_KEY = "roi_heads.box_predictor.cls_score.weight"


class CheckpointError(BadInputError, ValueError):
    """A checkpoint that cannot be read or does not fit the model (one-line message)."""


class UnsafePickleError(BadInputError, pickle.UnpicklingError):
    """A pickle asked for something other than numpy arrays, dtypes or plain containers."""


def _numpy_core(module: str):
    """numpy._core.<module> (numpy >= 2) or numpy.core.<module> (1.x), whichever a pickle named."""
    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # pragma: no cover - numpy 1.x
        return importlib.import_module(f"numpy.core.{module}")


# (module, name) a pickle may name -> the object it gets. Nothing here runs code beyond building arrays.
_ALLOWED = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    **{(f"numpy{core}.multiarray", name): (lambda name=name: getattr(_numpy_core("multiarray"), name))
       for core in (".core", "._core") for name in ("_reconstruct", "scalar")},
    **{(f"numpy{core}.numeric", "_frombuffer"): (lambda: _numpy_core("numeric")._frombuffer)  # protocol 5
       for core in (".core", "._core")},
    ("collections", "OrderedDict"): lambda: __import__("collections").OrderedDict,
    ("_codecs", "encode"): lambda: __import__("_codecs").encode,  # bytes in protocol-2 pickles
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        make = _ALLOWED.get((module, name))
        if make is None:
            raise UnsafePickleError(f"the pickle asks for {module}.{name}, which is not a numpy array, dtype or "
                                    "plain container")
        return make()

    def persistent_load(self, pid):
        raise UnsafePickleError("the pickle holds persistent references (a torch.save file?), not plain data")


def safe_unpickle(path: str | Path):
    """Load a pickle holding only numpy arrays/dtypes, dict, list, tuple, str and numbers.

    Anything else (a class, a function such as os.system in a __reduce__) raises UnsafePickleError before
    it is called. Python 2 pickles (Detectron's) are read with latin1 strings, as Detectron2 does.
    """
    with open(path, "rb") as f:
        return _SafeUnpickler(f, encoding="latin1").load()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_checkpoint_file(path: Path, map_location="cpu"):
    """The object in a checkpoint file, read without running code: torch files with weights_only=True,
    other pickles (Detectron2 `.pkl`) with `safe_unpickle`. Raises CheckpointError with a one-line message."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    import torch  # here, not at the top: the CLI's parser reads SOURCES in a torch-free install

    torch_err = None
    if zipfile.is_zipfile(path) or path.suffix != ".pkl":
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure: report it in one line, or try the .pkl reader
            torch_err = err
            if zipfile.is_zipfile(path):
                raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (corrupt, or it holds objects that "
                                 f"are not weights): {_first_line(err)}") from None
    try:
        return safe_unpickle(path)
    except UnsafePickleError as err:
        raise CheckpointError(f"{path} refused: {err}; only weights are read from checkpoint files") from None
    except Exception as err:  # noqa: BLE001
        first = _first_line(torch_err) if torch_err is not None else _first_line(err)
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint or Detectron2 .pkl (corrupt or truncated?): "
                         f"{first}") from None


# ---- recognising the source ---------------------------------------------------------------------------------

_SIGNATURES = {  # source -> key patterns that only its state dicts have
    "torchvision-v1": ("backbone.body.", "roi_heads.box_head.fc6.", "rpn.head.conv."),
    "torchvision-v2": ("backbone.body.", "roi_heads.box_head.5.", "backbone.fpn.inner_blocks.0.1."),
    "detectron2": ("backbone.bottom_up.", "proposal_generator.rpn_head.", "roi_heads.box_head.fc1."),
}
_LOOKED_FOR = ("maskrcnn-deploy (a 'format' entry), torchvision-v1 (backbone.body.*, roi_heads.box_head.fc6), "
               "torchvision-v2 (roi_heads.box_head.5, BN in the FPN), detectron2 (backbone.bottom_up.*, "
               "proposal_generator.rpn_head.*)")


def _weights_dict(obj):
    """The {name: array} dict in a loaded file: the file itself or its "model" / "state_dict" entry."""
    if not isinstance(obj, dict):
        return None
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def _is_weights(d) -> bool:
    import torch

    return isinstance(d, dict) and bool(d) and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in d.values())


def detect_source(obj, name: str = "checkpoint") -> str:
    """One of SOURCES for a loaded file, or ValueError listing what was looked for and the closest match."""
    if isinstance(obj, dict) and "format" in obj:
        return "maskrcnn-deploy"
    weights = _weights_dict(obj)
    keys = [str(k) for k in weights] if isinstance(weights, dict) else []
    if _is_weights(weights):
        if any(k.startswith("backbone.bottom_up.") for k in keys):
            return "detectron2"
        if any(k.startswith("backbone.body.") for k in keys):
            v2 = any(k.startswith(("roi_heads.box_head.5.", "backbone.fpn.inner_blocks.0.1.")) for k in keys)
            return "torchvision-v2" if v2 else "torchvision-v1"
    if isinstance(obj, dict) and "blobs" in obj:
        raise CheckpointError(f"{name} is a Caffe2 Detectron (v1) file ('blobs' naming); convert it with Detectron2 first "
                         "and pass the Detectron2 checkpoint")
    hits = {s: sum(any(k.startswith(p) for p in pats) for k in keys) for s, pats in _SIGNATURES.items()}
    best = max(hits, key=hits.get)
    closest = (f"closest: {best} ({hits[best]} of {len(keys)} keys match)" if hits[best]
               else f"no key matches any (keys: {', '.join(keys[:3]) or type(obj).__name__})")
    raise CheckpointError(f"{name} is not a Mask R-CNN checkpoint this tool reads; looked for {_LOOKED_FOR}; {closest}")


# ---- torchvision ---------------------------------------------------------------------------------------------

def torchvision_config(state_dict: dict, version: str, bn_eps: float | None = None) -> MaskRCNNConfig:
    """The config of a torchvision state dict: class count from the weights, and the backbone's BatchNorm flavour.

    `num_batches_tracked` in the backbone means torchvision built it with BatchNorm2d (eps 1e-5, trained from
    scratch); without it the backbone was FrozenBatchNorm2d: eps 0.0 for v1 (its COCO_V1 weights) and 1e-5 for
    v2. The file cannot tell FrozenBN eps 0 from 1e-5 (an ImageNet-only backbone): pass bn_eps to override.
    """
    n = int(state_dict[_CLS_KEY].shape[0]) if _CLS_KEY in state_dict else 91
    bn = any(k.startswith("backbone.body.") and k.endswith("num_batches_tracked") for k in state_dict)
    if version == "torchvision-v2":
        eps = 1e-5 if bn_eps is None else bn_eps
        return torchvision_v2(n, norm="bn" if bn else "frozen_bn", norm_eps=eps)
    eps = (1e-5 if bn else 0.0) if bn_eps is None else bn_eps
    return torchvision_v1(n, norm="bn" if bn else "frozen_bn", norm_eps=eps,
                          trainable_backbone_layers=5 if bn else 3)


# ---- Detectron2 ----------------------------------------------------------------------------------------------

_D2_RULES = [  # Detectron2 name -> this project's name (torchvision layout)
    (r"^backbone\.bottom_up\.stem\.conv1\.norm\.(.+)$", r"backbone.body.bn1.\1"),
    (r"^backbone\.bottom_up\.stem\.conv1\.weight$", r"backbone.body.conv1.weight"),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.norm\.(.+)$", lambda m: f"backbone.body.layer{int(m[1]) - 1}"
     f".{m[2]}.downsample.1.{m[3]}"),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.weight$", lambda m: f"backbone.body.layer{int(m[1]) - 1}"
     f".{m[2]}.downsample.0.weight"),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.norm\.(.+)$", lambda m: f"backbone.body.layer{int(m[1]) - 1}"
     f".{m[2]}.bn{m[3]}.{m[4]}"),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.weight$", lambda m: f"backbone.body.layer{int(m[1]) - 1}"
     f".{m[2]}.conv{m[3]}.weight"),
    (r"^backbone\.fpn_lateral(\d)\.(weight|bias)$", lambda m: f"backbone.fpn.inner_blocks.{int(m[1]) - 2}.0.{m[2]}"),
    (r"^backbone\.fpn_output(\d)\.(weight|bias)$", lambda m: f"backbone.fpn.layer_blocks.{int(m[1]) - 2}.0.{m[2]}"),
    (r"^proposal_generator\.rpn_head\.conv\.(weight|bias)$", r"rpn.head.conv.0.0.\1"),
    (r"^proposal_generator\.rpn_head\.objectness_logits\.(weight|bias)$", r"rpn.head.cls_logits.\1"),
    (r"^proposal_generator\.rpn_head\.anchor_deltas\.(weight|bias)$", r"rpn.head.bbox_pred.\1"),
    (r"^roi_heads\.box_head\.fc1\.(weight|bias)$", r"roi_heads.box_head.fc6.\1"),
    (r"^roi_heads\.box_head\.fc2\.(weight|bias)$", r"roi_heads.box_head.fc7.\1"),
    (r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)$", r"roi_heads.box_predictor.\1.\2"),
    (r"^roi_heads\.mask_head\.mask_fcn(\d)\.(weight|bias)$", lambda m: f"roi_heads.mask_head.{int(m[1]) - 1}.0.{m[2]}"),
    (r"^roi_heads\.mask_head\.deconv\.(weight|bias)$", r"roi_heads.mask_predictor.conv5_mask.\1"),
    (r"^roi_heads\.mask_head\.predictor\.(weight|bias)$", r"roi_heads.mask_predictor.mask_fcn_logits.\1"),
]
_D2_RULES = [(re.compile(p), r) for p, r in _D2_RULES]
_D2_IGNORED = re.compile(r"^(pixel_mean|pixel_std|proposal_generator\.anchor_generator\..*|.*num_batches_tracked)$")


def map_detectron2_key(key: str) -> str | None:
    """Detectron2 state-dict name -> this project's name; None for entries the model has no use for
    (pixel_mean/std, anchor buffers); unknown names come back unchanged (and are then reported as unexpected)."""
    if _D2_IGNORED.match(key):
        return None
    for pattern, repl in _D2_RULES:
        m = pattern.match(key)
        if m:
            return repl(m) if callable(repl) else pattern.sub(repl, key)
    return key


def detectron2_state_dict(weights: dict) -> dict:
    """{Detectron2 name: array or tensor} -> {project name: float tensor}."""
    import torch

    out = {}
    for key, value in weights.items():
        name = map_detectron2_key(str(key))
        if name is not None:
            out[name] = torch.as_tensor(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
    return out


def detectron2_config(weights: dict, name: str = "checkpoint") -> MaskRCNNConfig:
    """The model-zoo config that fits Detectron2 weights: depth (blocks in res4), ResNeXt groups and width,
    class count. The weights cannot tell where the stride sits or the pixel std: as in Detectron2's model zoo,
    ResNets (MSRA) get stride_in_1x1 and std 1, ResNeXts (C2) the stride in the 3x3 and ImageNet std x 255.
    A model trained with other settings needs config= (see `detectron2_mask_rcnn`)."""
    def shape(key):
        if key not in weights:
            raise CheckpointError(f"{name} is a Detectron2 checkpoint without {key}; only Mask R-CNN FPN models are read")
        return tuple(weights[key].shape)

    res4 = {int(m[1]) for k in weights if (m := re.match(r"backbone\.bottom_up\.res4\.(\d+)\.", str(k)))}
    if not res4:
        raise CheckpointError(f"{name} holds no Detectron2 ResNet weights (backbone.bottom_up.res4.*): not a Detectron2 "
                         "checkpoint")
    depth = {6: 50, 23: 101}.get(len(res4))
    if depth is None:
        raise CheckpointError(f"{name}: a ResNet with {len(res4)} blocks in res4 is not supported (R50: 6, R101: 23)")
    width, in_per_group = shape("backbone.bottom_up.res2.0.conv2.weight")[:2]
    groups = width // in_per_group
    num_classes = shape("roi_heads.box_predictor.cls_score.weight")[0]
    k = num_classes - 1
    if shape("roi_heads.box_predictor.bbox_pred.weight")[0] != 4 * k:
        raise CheckpointError(f"{name}: class-agnostic box regression is not supported (bbox_pred has "
                         f"{shape('roi_heads.box_predictor.bbox_pred.weight')[0]} outputs for {k} classes)")
    if shape("roi_heads.mask_head.predictor.weight")[0] != k:
        raise CheckpointError(f"{name}: class-agnostic masks are not supported (the mask predictor has "
                         f"{shape('roi_heads.mask_head.predictor.weight')[0]} outputs for {k} classes)")
    backbone = "X101-32x8d-FPN" if groups > 1 else f"R{depth}-FPN"
    return detectron2_mask_rcnn(num_classes, backbone, backbone_depth=depth, block_groups=groups,
                                block_width_per_group=width // groups)
