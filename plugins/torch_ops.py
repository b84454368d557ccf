"""The native RoIAlign kernels as PyTorch custom ops (torch.library), with autograd and fake kernels.

Ops (namespace `maskrcnn_deploy`):
  roi_align(features [B,C,H,W], rois [K,5], output_height, output_width, spatial_scale,
            sampling_ratio, aligned, mode) -> [K, C, oh, ow]
  multilevel_roi_align(rois [K,5], features [P2..P5 each [B,C,H_l,W_l]], output_height, output_width,
            spatial_scales, sampling_ratio, aligned, mode, canonical_scale, canonical_level, eps, extents=None)
            -> [K, C, oh, ow]; each roi pools from its FPN level in one pass (torchvision's level rule).
            extents [B,2] float32 (optional): (height, width) in input pixels of the region each image's maps
            cover; a tap beyond ceil(extent * scale) rows/columns reads as outside the map, so a padded
            canvas pools as the image's own, smaller maps would (docs/ops.md).
  multilevel_roi_align_backward(grad [K,C,oh,ow], rois, features, ...) -> grads like features.

rois are (batch_index, x1, y1, x2, y2) in input pixels, float32 (float64 with float64 features);
sampling_ratio 0 = adaptive; mode "avg" | "max". Features: CPU float32/float64 (threaded); CUDA
float32/float16 with float32 accumulation. The fake kernels let
torch.export and the ONNX exporter trace through the ops without running them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import native

__all__ = ["roi_align", "multilevel_roi_align", "fpn_levels"]

_SUPPORTED = {"cpu": (torch.float32, torch.float64), "cuda": (torch.float32, torch.float16)}
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.float64: "float64"}


def _rois_dtype(features_dtype: torch.dtype) -> torch.dtype:
    """rois are float32 for float32 and float16 features (docs/ops.md); float64 features (CPU, for gradcheck)
    take float64 rois."""
    return torch.float64 if features_dtype == torch.float64 else torch.float32


def _check_inputs(rois: Tensor, features: list[Tensor], output_height: int, output_width: int,
                  spatial_scales: list[float], sampling_ratio: int, mode: str, extents: Tensor | None = None) -> None:
    """Raise ValueError with a one-line reason for anything the kernels cannot take."""
    native.check_shapes(tuple(rois.shape), [tuple(f.shape) for f in features], len(spatial_scales),
                        None if extents is None else tuple(extents.shape))
    if extents is not None and (extents.dtype != torch.float32 or extents.device != rois.device):
        raise ValueError(f"extents must be float32 on {rois.device}, got {extents.dtype} on {extents.device}")
    first = features[0]
    for i, f in enumerate(features):
        if f.dtype != first.dtype or f.device != rois.device:
            raise ValueError(f"feature map {i} ({f.dtype}, {f.device}) must share the dtype of map 0 ({first.dtype}) "
                             f"and the device of rois ({rois.device})")
    if first.device.type not in _SUPPORTED or first.dtype not in _SUPPORTED[first.device.type]:
        raise ValueError(f"RoIAlign on {first.device.type} supports "
                         f"{[str(d) for d in _SUPPORTED.get(first.device.type, ())]}, got {first.dtype}")
    if rois.dtype != _rois_dtype(first.dtype):
        raise ValueError(f"rois must be {_rois_dtype(first.dtype)} for {first.dtype} features, got {rois.dtype} "
                         "(float16 box corners >= 1024 px move in 1-pixel steps): pass rois.float()")
    if output_height < 1 or output_width < 1:
        raise ValueError(f"output size must be positive, got {output_height}x{output_width}")
    if sampling_ratio < 0:
        raise ValueError(f"sampling_ratio must be >= 0 (0 = adaptive), got {sampling_ratio}")
    if mode not in ("avg", "max"):
        raise ValueError(f"mode must be 'avg' or 'max', got {mode!r}")
    if any(s <= 0 for s in spatial_scales):
        raise ValueError(f"spatial scales must be positive, got {spatial_scales}")
    if rois.shape[0] and not torch.compiler.is_compiling():
        lo, hi = torch.aminmax(rois[:, 0])
        if lo.item() < 0 or hi.item() >= first.shape[0]:
            raise ValueError(f"roi batch indices span [{lo.item():g}, {hi.item():g}] but the batch has "
                             f"{first.shape[0]} image(s)")


def _call_native(direction: str, rois: Tensor, features: list[Tensor], output_height: int, output_width: int,
                 spatial_scales: list[float], sampling_ratio: int, aligned: bool, mode: str, canonical_scale: float,
                 canonical_level: int, eps: float, extents: Tensor | None, *buffers) -> None:
    """Run mrd_roi_align_{direction}_{cpu|cuda} on contiguous tensors; `buffers` are the function's
    trailing pointer arguments (forward: output; backward: grad_output, grad_features array)."""
    args = native.kernel_args(_DTYPE_NAMES[features[0].dtype], rois.data_ptr(), rois.shape[0],
                              [f.data_ptr() for f in features], [tuple(f.shape) for f in features], output_height,
                              output_width, spatial_scales, sampling_ratio, aligned, mode, canonical_scale,
                              canonical_level, eps, 0 if extents is None else extents.data_ptr()) + buffers
    if rois.is_cuda:
        lib = native.cuda_library()
        with torch.cuda.device(rois.device):
            status = getattr(lib, f"mrd_roi_align_{direction}_cuda")(*args, torch.cuda.current_stream().cuda_stream)
    else:
        lib = native.cpu_library()
        status = getattr(lib, f"mrd_roi_align_{direction}_cpu")(*args, torch.get_num_threads())
    native.check_status(lib, status, f"RoIAlign {direction}")


def _forward(rois: Tensor, features: list[Tensor], output_height: int, output_width: int, spatial_scales: list[float],
             sampling_ratio: int, aligned: bool, mode: str, canonical_scale: float, canonical_level: int,
             eps: float, extents: Tensor | None = None) -> Tensor:
    _check_inputs(rois, features, output_height, output_width, spatial_scales, sampling_ratio, mode, extents)
    rois = rois.contiguous()
    features = [f.contiguous() for f in features]
    extents = None if extents is None else extents.contiguous()
    out = features[0].new_empty((rois.shape[0], features[0].shape[1], output_height, output_width))
    if out.numel():
        _call_native("forward", rois, features, output_height, output_width, spatial_scales, sampling_ratio, aligned,
                     mode, canonical_scale, canonical_level, eps, extents, out.data_ptr())
    return out


def _backward(grad: Tensor, rois: Tensor, features: list[Tensor], output_height: int, output_width: int,
              spatial_scales: list[float], sampling_ratio: int, aligned: bool, mode: str, canonical_scale: float,
              canonical_level: int, eps: float, extents: Tensor | None = None) -> list[Tensor]:
    rois, grad = rois.contiguous(), grad.to(features[0].dtype).contiguous()
    features = [f.contiguous() for f in features]
    extents = None if extents is None else extents.contiguous()
    # CUDA accumulates with float32 atomics, so its gradient buffers are float32 whatever the input dtype.
    acc_dtype = torch.float32 if grad.is_cuda else grad.dtype
    grads = [torch.zeros(f.shape, dtype=acc_dtype, device=f.device) for f in features]
    if grad.numel():
        _call_native("backward", rois, features, output_height, output_width, spatial_scales, sampling_ratio, aligned,
                     mode, canonical_scale, canonical_level, eps, extents, grad.data_ptr(),
                     native.pointers([g.data_ptr() for g in grads]))
    return [g.to(f.dtype) for g, f in zip(grads, features)]


# ---- multilevel_roi_align ---------------------------------------------------------------------------------------

@torch.library.custom_op("maskrcnn_deploy::multilevel_roi_align", mutates_args=(), device_types=("cpu", "cuda"))
def multilevel_roi_align_op(rois: Tensor, features: list[Tensor], output_height: int, output_width: int,
                            spatial_scales: list[float], sampling_ratio: int, aligned: bool, mode: str,
                            canonical_scale: float, canonical_level: int, eps: float,
                            extents: Tensor | None = None) -> Tensor:
    return _forward(rois, features, output_height, output_width, spatial_scales, sampling_ratio, aligned, mode,
                    canonical_scale, canonical_level, eps, extents)


@multilevel_roi_align_op.register_fake
def _(rois, features, output_height, output_width, spatial_scales, sampling_ratio, aligned, mode, canonical_scale,
      canonical_level, eps, extents=None):
    return features[0].new_empty((rois.shape[0], features[0].shape[1], output_height, output_width))


@torch.library.custom_op("maskrcnn_deploy::multilevel_roi_align_backward", mutates_args=(),
                         device_types=("cpu", "cuda"))
def multilevel_roi_align_backward_op(grad: Tensor, rois: Tensor, features: list[Tensor], output_height: int,
                                     output_width: int, spatial_scales: list[float], sampling_ratio: int, aligned: bool,
                                     mode: str, canonical_scale: float, canonical_level: int,
                                     eps: float, extents: Tensor | None = None) -> list[Tensor]:
    return _backward(grad, rois, features, output_height, output_width, spatial_scales, sampling_ratio, aligned, mode,
                     canonical_scale, canonical_level, eps, extents)


@multilevel_roi_align_backward_op.register_fake
def _(grad, rois, features, *args):
    return [torch.empty_like(f) for f in features]


def _setup_multilevel(ctx, inputs, output):
    rois, features, *params = inputs  # params end with extents (a tensor or None), passed on as they are
    ctx.save_for_backward(rois, *features)
    ctx.params = params


def _multilevel_backward(ctx, grad):
    rois, *features = ctx.saved_tensors
    grads = multilevel_roi_align_backward_op(grad, rois, features, *ctx.params) if any(ctx.needs_input_grad[1]) \
        else [None] * len(features)
    return (None, grads) + (None,) * len(ctx.params)


multilevel_roi_align_op.register_autograd(_multilevel_backward, setup_context=_setup_multilevel)


# ---- roi_align (one feature map) --------------------------------------------------------------------------------

@torch.library.custom_op("maskrcnn_deploy::roi_align", mutates_args=(), device_types=("cpu", "cuda"))
def roi_align_op(features: Tensor, rois: Tensor, output_height: int, output_width: int, spatial_scale: float,
                 sampling_ratio: int, aligned: bool, mode: str) -> Tensor:
    return _forward(rois, [features], output_height, output_width, [spatial_scale], sampling_ratio, aligned, mode,
                    224.0, 4, 1e-6)


@roi_align_op.register_fake
def _(features, rois, output_height, output_width, spatial_scale, sampling_ratio, aligned, mode):
    return features.new_empty((rois.shape[0], features.shape[1], output_height, output_width))


def _setup_single(ctx, inputs, output):
    features, rois, *params = inputs
    ctx.save_for_backward(features, rois)
    ctx.params = params


def _single_backward(ctx, grad):
    features, rois = ctx.saved_tensors
    oh, ow, scale, sampling_ratio, aligned, mode = ctx.params
    grad_features = None
    if ctx.needs_input_grad[0]:
        grad_features, = multilevel_roi_align_backward_op(grad, rois, [features], oh, ow, [scale], sampling_ratio,
                                                          aligned, mode, 224.0, 4, 1e-6)
    return (grad_features, None) + (None,) * len(ctx.params)


roi_align_op.register_autograd(_single_backward, setup_context=_setup_single)


# ---- Python API -------------------------------------------------------------------------------------------------

def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def roi_align(features: Tensor, rois: Tensor, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
              sampling_ratio: int = 0, aligned: bool = False, mode: str = "avg") -> Tensor:
    """RoIAlign on one map: features [B,C,H,W], rois [K,5] -> [K, C, oh, ow] (torchvision semantics)."""
    oh, ow = _pair(output_size)
    return roi_align_op(features, rois, oh, ow, float(spatial_scale), int(sampling_ratio), bool(aligned), mode)


def multilevel_roi_align(features: list[Tensor], rois: Tensor, output_size: int | tuple[int, int],
                         spatial_scales: list[float], sampling_ratio: int = 2, aligned: bool = False,
                         canonical_scale: float = 224.0, canonical_level: int = 4, eps: float = 1e-6,
                         mode: str = "avg", extents: Tensor | None = None) -> Tensor:
    """Fused FPN RoIAlign: each roi [K,5] pools from its level of P2.. (features) -> [K, C, oh, ow]; with
    extents [B,2] each image samples only the part of every map it covers (see the module docstring)."""
    oh, ow = _pair(output_size)
    return multilevel_roi_align_op(rois, list(features), oh, ow, [float(s) for s in spatial_scales],
                                   int(sampling_ratio), bool(aligned), mode, float(canonical_scale),
                                   int(canonical_level), float(eps), extents)


def fpn_levels(rois: Tensor, spatial_scales: list[float], canonical_scale: float = 224.0, canonical_level: int = 4,
               eps: float = 1e-6) -> Tensor:
    """Level index (0 = first map) the kernels pick for each roi [K,5]; -1 where undefined. CPU, [K] int32."""
    rois = rois.detach().to("cpu").contiguous()
    if rois.dim() != 2 or rois.shape[1] != 5 or rois.dtype not in _SUPPORTED["cpu"]:
        raise ValueError(f"rois must be a float32/float64 [K, 5] tensor, got {rois.dtype} {tuple(rois.shape)}")
    out = torch.empty(rois.shape[0], dtype=torch.int32)
    levels = native.levels_struct(1, 1, [(1, 1)] * len(spatial_scales), spatial_scales, canonical_scale,
                                  canonical_level, eps)
    lib = native.cpu_library()
    status = lib.mrd_fpn_levels_cpu(native.DTYPE_CODES[_DTYPE_NAMES[rois.dtype]], levels, rois.data_ptr(),
                                    rois.shape[0], out.data_ptr())
    native.check_status(lib, status, "FPN level assignment")
    return out
