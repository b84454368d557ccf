"""TensorRT calibration cache: the text file TensorRT 10.x calibrators read and write.

Only for TensorRT 10.x users building with the (deprecated) implicit INT8 path, e.g. Jetson on
JetPack 6 with TensorRT 10.3; TensorRT 11 removed calibrators, and takes the Q/DQ graph instead.

Format (one tensor per line, names as in the ONNX graph, which TensorRT's ONNX parser keeps):

    TRT-100300-EntropyCalibration2          header: TRT-<version>-<calibrator algorithm>
    images: 3c010204                        scale = amax / 127: the float32's bits as hex
    /fpn/Add_output_0: 0                    (TensorRT writes them without leading zeros)

The version is TensorRT's NV_TENSORRT_VERSION, major * 10000 + minor * 100 + patch
(NvInferRuntimeBase.h, 10.x): 10.3.0 -> 100300, the header of TAO's TensorRT 10.3 caches.
TensorRT skips a cache it finds incompatible and calibrates again (NVIDIA/TensorRT#1378: "trt
will skip the file if it is incompatible"), so the version and the calibrator named in the header
are options that must match the user's TensorRT and calibrator. `trtexec --calib` and polygraphy's
default calibrator are EntropyCalibration2; the scales themselves come from whichever method
`calibrate` ran.
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path

from maskrcnn_deploy.calibration.regions import PrecisionError

__all__ = ["ALGORITHMS", "DEFAULT_TRT_VERSION", "trt_version_number", "calibration_cache_text",
           "read_calibration_cache"]

ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
DEFAULT_TRT_VERSION = "10.3.0"  # JetPack 6.x, the TensorRT 10 release most implicit-INT8 users run
_LINE = re.compile(r"^(?P<name>.+): (?P<hex>[0-9a-fA-F]{1,8})$")


def trt_version_number(version: str) -> int:
    """"10.3.0" -> 100300, as TensorRT writes it in the cache header (10.x and later)."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or int(parts[0]) < 10:
        raise PrecisionError(f"TensorRT version must be MAJOR.MINOR.PATCH with MAJOR >= 10, got {version!r}")
    major, minor, patch = (int(p) for p in parts)
    return (major * 100 + minor) * 100 + patch


def calibration_cache_text(scales: dict[str, float], trt_version: str = DEFAULT_TRT_VERSION,
                           algorithm: str = "EntropyCalibration2") -> str:
    """The text of a TensorRT calibration cache holding per-tensor int8 scales (tensor -> amax / 127)."""
    if algorithm not in ALGORITHMS:
        raise PrecisionError(f"unknown calibrator algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")
    lines = [f"TRT-{trt_version_number(trt_version)}-{algorithm}"]
    for name, scale in scales.items():
        if not math.isfinite(scale) or scale < 0:
            raise PrecisionError(f"tensor {name!r} has an invalid scale {scale}: recalibrate")
        if "\n" in name:
            raise PrecisionError(f"tensor name {name!r} cannot be written to a calibration cache")
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    return "\n".join(lines) + "\n"


def read_calibration_cache(path: str | Path) -> tuple[int, str, dict[str, float]]:
    """(version number, algorithm, tensor -> scale) of a cache file, checking every line."""
    path = Path(path)
    if not path.is_file():
        raise PrecisionError(f"calibration cache not found: {path}")
    lines = path.read_text().splitlines()
    header = re.fullmatch(r"TRT-(\d+)-(\w+)", lines[0].strip()) if lines else None
    if header is None:
        raise PrecisionError(f"{path} is not a TensorRT calibration cache (first line {lines[:1]!r}, "
                             "expected TRT-<version>-<algorithm>)")
    scales = {}
    for number, line in enumerate(lines[1:], start=2):
        match = _LINE.match(line.rstrip())
        if match is None:
            raise PrecisionError(f"{path}:{number}: expected 'tensor: <hex float32 bits>', got {line!r}")
        scales[match["name"]] = struct.unpack(">f", int(match["hex"], 16).to_bytes(4, "big"))[0]
    return int(header[1]), header[2], scales
