"""ctypes access to the native RoIAlign libraries (C interface: roi_align/roi_align_api.h).

`cpu_library()` / `cuda_library()` load the shared libraries built at install time and raise
`NativeLibraryError` with what to do when they are missing. `levels_struct` and `pool_params`
build the two argument structs; `kernel_args` builds the arguments every RoIAlign call starts with
and `check_shapes` refuses shapes the kernels would read out of bounds with, for every caller (the
PyTorch op in torch_ops.py, the ONNX Runtime op through `forward_cpu`). Imports numpy, never torch.
"""

from __future__ import annotations

import ctypes
import os
import sysconfig
from functools import lru_cache
from pathlib import Path

import numpy as np

from maskrcnn_deploy.common.errors import BadInputError

__all__ = ["NativeLibraryError", "MAX_LEVELS", "DTYPE_CODES", "MrdLevels", "MrdPoolParams", "cpu_library",
           "cuda_library", "library_path", "levels_struct", "pool_params", "pointers", "check_status", "check_shapes", "kernel_args", "cpu_threads",
           "forward_cpu"]

MAX_LEVELS = 8
DTYPE_CODES = {"float32": 0, "float16": 1, "float64": 2}
_HERE = Path(__file__).resolve().parent
_REBUILD_HINT = "reinstall the package (`pip install -e .` or `make test`) or run `python plugins/build_native.py`"


class NativeLibraryError(BadInputError, RuntimeError):
    """The native RoIAlign library is missing, unloadable, or reported an error."""


class MrdPoolParams(ctypes.Structure):
    _fields_ = [("pooled_h", ctypes.c_int32), ("pooled_w", ctypes.c_int32), ("sampling_ratio", ctypes.c_int32),
                ("aligned", ctypes.c_int32), ("mode", ctypes.c_int32)]


class MrdLevels(ctypes.Structure):
    _fields_ = [("num_levels", ctypes.c_int32), ("batch", ctypes.c_int32), ("channels", ctypes.c_int32),
                ("height", ctypes.c_int32 * MAX_LEVELS), ("width", ctypes.c_int32 * MAX_LEVELS),
                ("spatial_scale", ctypes.c_float * MAX_LEVELS), ("canonical_scale", ctypes.c_float),
                ("canonical_level", ctypes.c_int32), ("eps", ctypes.c_float),
                ("extents", ctypes.c_void_p)]  # [B,2] float32 (height, width) per image, or NULL (roi_align_api.h)


_POINTERS = ctypes.c_void_p * MAX_LEVELS
_ARGS = {  # name -> argtypes; every function returns an int status
    "mrd_fpn_levels_cpu": [ctypes.c_int, ctypes.POINTER(MrdLevels), ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p],
    "mrd_roi_align_forward_cpu": [ctypes.c_int, ctypes.POINTER(MrdLevels), _POINTERS, ctypes.c_void_p, ctypes.c_int64,
                                  ctypes.POINTER(MrdPoolParams), ctypes.c_void_p, ctypes.c_int],
    "mrd_roi_align_backward_cpu": [ctypes.c_int, ctypes.POINTER(MrdLevels), _POINTERS, ctypes.c_void_p,
                                   ctypes.c_int64, ctypes.POINTER(MrdPoolParams), ctypes.c_void_p, _POINTERS,
                                   ctypes.c_int],
    "mrd_roi_align_forward_cuda": [ctypes.c_int, ctypes.POINTER(MrdLevels), _POINTERS, ctypes.c_void_p,
                                   ctypes.c_int64, ctypes.POINTER(MrdPoolParams), ctypes.c_void_p, ctypes.c_void_p],
    "mrd_roi_align_backward_cuda": [ctypes.c_int, ctypes.POINTER(MrdLevels), _POINTERS, ctypes.c_void_p,
                                    ctypes.c_int64, ctypes.POINTER(MrdPoolParams), ctypes.c_void_p, _POINTERS,
                                    ctypes.c_void_p],
}


def library_path(kind: str) -> Path:
    """Path of the `cpu` or `cuda` library for this interpreter (it may not exist)."""
    return _HERE / f"_roi_align_{kind}{sysconfig.get_config_var('EXT_SUFFIX')}"


def _load(kind: str, missing_hint: str = _REBUILD_HINT) -> ctypes.CDLL:
    path = library_path(kind)
    if not path.exists():
        raise NativeLibraryError(f"native RoIAlign {kind.upper()} library not found at {path}: {missing_hint}")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise NativeLibraryError(f"cannot load native RoIAlign library {path} ({exc}): {_REBUILD_HINT}") from None
    for name, argtypes in _ARGS.items():
        if name.endswith("_" + kind):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, ctypes.c_int
    lib.mrd_status_message.argtypes, lib.mrd_status_message.restype = [ctypes.c_int], ctypes.c_char_p
    return lib


@lru_cache(maxsize=None)
def cpu_library() -> ctypes.CDLL:
    return _load("cpu")


@lru_cache(maxsize=None)
def cuda_library() -> ctypes.CDLL:
    return _load("cuda", "it is built only where nvcc is found at install time; install the CUDA toolkit, "
                         f"then {_REBUILD_HINT}")


def check_status(lib: ctypes.CDLL, status: int, what: str) -> None:
    if status != 0:
        raise NativeLibraryError(f"{what} failed: {lib.mrd_status_message(status).decode()}")


def levels_struct(batch: int, channels: int, sizes: list[tuple[int, int]], spatial_scales: list[float],
                  canonical_scale: float = 224.0, canonical_level: int = 4, eps: float = 1e-6) -> MrdLevels:
    """Describe 1..8 feature levels sharing (batch, channels); sizes are (height, width) per level."""
    lv = MrdLevels()
    lv.num_levels, lv.batch, lv.channels = len(sizes), batch, channels
    for i, ((h, w), s) in enumerate(zip(sizes, spatial_scales)):
        lv.height[i], lv.width[i], lv.spatial_scale[i] = h, w, s
    lv.canonical_scale, lv.canonical_level, lv.eps = canonical_scale, canonical_level, eps
    return lv


def pool_params(output_size: tuple[int, int], sampling_ratio: int, aligned: bool, mode: str) -> MrdPoolParams:
    """mode "avg" | "max"; any other is passed on as -1, which the kernels refuse (MRD_BAD_ARGUMENT)."""
    return MrdPoolParams(output_size[0], output_size[1], sampling_ratio, int(aligned),
                         {"avg": 0, "max": 1}.get(mode, -1))


def pointers(addresses: list[int]) -> ctypes.Array:
    """A MAX_LEVELS array of raw pointers (unused slots NULL)."""
    arr = _POINTERS()
    for i, a in enumerate(addresses):
        arr[i] = a
    return arr



def check_shapes(rois_shape: tuple[int, ...], feature_shapes: list[tuple[int, ...]], num_scales: int,
                 extents_shape: tuple[int, ...] | None = None) -> None:
    """Raise ValueError for shapes the kernels cannot take: the C side sees pointers, batch and channels of
    map 0 and (height, width) per map, so rois [K,5], maps [B,C,H_l,W_l] sharing (B, C) and extents [B,2]
    (when given) are checked here."""
    if not 1 <= len(feature_shapes) <= MAX_LEVELS:
        raise ValueError(f"RoIAlign takes 1 to {MAX_LEVELS} feature maps, got {len(feature_shapes)}")
    if num_scales != len(feature_shapes):
        raise ValueError(f"{num_scales} spatial scales for {len(feature_shapes)} feature maps")
    if len(rois_shape) != 2 or rois_shape[1] != 5:
        raise ValueError(f"rois must be [K, 5] = (batch_index, x1, y1, x2, y2), got shape {tuple(rois_shape)}")
    first = tuple(feature_shapes[0][:2])
    for i, shape in enumerate(feature_shapes):
        if len(shape) != 4:
            raise ValueError(f"feature map {i} must be 4-D [B, C, H, W], got shape {tuple(shape)}")
        if tuple(shape[:2]) != first:
            raise ValueError(f"feature map {i} has batch/channels {tuple(shape[:2])}, map 0 has {first}")
    if extents_shape is not None and tuple(extents_shape) != (first[0], 2):
        raise ValueError(f"extents must be [B, 2] = (height, width) per image, B = {first[0]}, got shape "
                         f"{tuple(extents_shape)}")


def kernel_args(dtype: str, rois: int, num_rois: int, features: list[int], feature_shapes: list[tuple[int, ...]],
                output_height: int, output_width: int, spatial_scales: list[float], sampling_ratio: int,
                aligned: bool, mode: str, canonical_scale: float, canonical_level: int, eps: float,
                extents: int = 0) -> tuple:
    """The arguments every mrd_roi_align_{forward,backward}_{cpu,cuda} call starts with: (dtype code, levels,
    feature pointers, rois pointer, num_rois, params). rois/features are addresses of contiguous buffers of
    `dtype` ("float32" ...), feature_shapes their [B,C,H,W] (checked with `check_shapes` first); extents the
    address of a contiguous float32 [B,2] buffer, or 0 (every image covers every map)."""
    batch, channels = feature_shapes[0][:2]
    levels = levels_struct(batch, channels, [tuple(s[-2:]) for s in feature_shapes], spatial_scales, canonical_scale,
                           canonical_level, eps)
    levels.extents = extents or None
    params = pool_params((output_height, output_width), sampling_ratio, aligned, mode)
    return DTYPE_CODES[dtype], levels, pointers(features), rois, num_rois, params


def cpu_threads() -> int:
    """Threads for the CPU kernel outside PyTorch: the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def forward_cpu(rois: np.ndarray, features: list[np.ndarray], output_height: int, output_width: int,
                spatial_scales: list[float], sampling_ratio: int, aligned: bool, mode: str, canonical_scale: float,
                canonical_level: int, eps: float, num_threads: int | None = None,
                extents: np.ndarray | None = None) -> np.ndarray:
    """The CPU kernel on numpy: rois [K,5], features [B,C,H_l,W_l] per level (and optionally extents [B,2], the
    region each image covers) -> float32 [K, C, oh, ow], each roi pooled from its level (torch_ops'
    multilevel_roi_align without torch). Inputs are read as contiguous float32 (no copy when they are); the
    kernel checks the parameters and the batch indices."""
    check_shapes(rois.shape, [f.shape for f in features], len(spatial_scales),
                 None if extents is None else extents.shape)
    rois = np.ascontiguousarray(rois, dtype=np.float32)
    features = [np.ascontiguousarray(f, dtype=np.float32) for f in features]
    extents = None if extents is None else np.ascontiguousarray(extents, dtype=np.float32)
    out = np.empty((rois.shape[0], features[0].shape[1], output_height, output_width), dtype=np.float32)
    # called with no rois too: the kernel checks the parameters before it reads anything
    args = kernel_args("float32", rois.ctypes.data, rois.shape[0], [f.ctypes.data for f in features],
                       [f.shape for f in features], output_height, output_width, spatial_scales, sampling_ratio,
                       aligned, mode, canonical_scale, canonical_level, eps,
                       0 if extents is None else extents.ctypes.data)
    lib = cpu_library()
    status = lib.mrd_roi_align_forward_cpu(*args, out.ctypes.data, num_threads or cpu_threads())
    check_status(lib, status, "RoIAlign forward")
    return out
