"""ctypes access to the native RoIAlign libraries (C interface: roi_align/roi_align_api.h).

`cpu_library()` / `cuda_library()` load the shared libraries built at install time and raise
`NativeLibraryError` with what to do when they are missing. `levels_struct` and `pool_params`
build the two argument structs.
"""

from __future__ import annotations

import ctypes
import sysconfig
from functools import lru_cache
from pathlib import Path

from maskrcnn_deploy.common.errors import BadInputError

__all__ = ["NativeLibraryError", "MAX_LEVELS", "DTYPE_CODES", "MrdLevels", "MrdPoolParams", "cpu_library",
           "cuda_library", "library_path", "levels_struct", "pool_params", "pointers", "check_status"]

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
                ("canonical_level", ctypes.c_int32), ("eps", ctypes.c_float)]


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
    return MrdPoolParams(output_size[0], output_size[1], sampling_ratio, int(aligned), {"avg": 0, "max": 1}[mode])


def pointers(addresses: list[int]) -> ctypes.Array:
    """A MAX_LEVELS array of raw pointers (unused slots NULL)."""
    arr = _POINTERS()
    for i, a in enumerate(addresses):
        arr[i] = a
    return arr

