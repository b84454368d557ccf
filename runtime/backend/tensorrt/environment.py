"""The metadata file beside a TensorRT engine, and the checks that decide whether an engine may run here.

A serialized TensorRT engine only runs with the TensorRT version, the GPU model (compute capability)
and the plugin library it was built with; loading it elsewhere fails deep inside TensorRT or, worse,
runs with a different plugin. So `maskrcnn-deploy build` writes `model.engine.json` beside
`model.engine`, and the TensorRT backend checks it before TensorRT touches the engine:

    {"schema": "maskrcnn_deploy.engine/1",
     "tensorrt_version": "10.13.0.35", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
     "precision": "fp16", "precision_source": "graph" | "builder flags", "strongly_typed": true, "tf32": false,
     "input_profile": {"images": {"min": [1,3,800,1344], "opt": [...], "max": [...]}, ...},
     "plugin_library": "/abs/libmaskrcnn_deploy_trt_plugin.so", "plugin_sha256": "...",   (null: no custom node)
     "onnx_path": "...", "onnx_sha256": "...", "engine_sha256": "...", "engine_bytes": 123,
     "package_version": "0.1.0", "build_time_utc": "2026-...Z", "build_seconds": 41.2,
     "builder": {...the options used...}, "onnx_metadata": {"maskrcnn_deploy": "<config json>"}}

Everything here is pure Python (no TensorRT, no GPU; `require_cuda` asks cuda_memory.py, which imports its
CUDA library on first use), so every refusal can be tested anywhere.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from maskrcnn_deploy.common.errors import BackendUnavailableError, BadInputError
from maskrcnn_deploy.common.files import file_digest, write_json
from maskrcnn_deploy.runtime.backend.tensorrt import cuda_memory
from maskrcnn_deploy.runtime.backend.tensorrt.cuda_memory import CudaUnavailableError

__all__ = ["TensorRTError", "TensorRTUnavailableError", "EngineMetadata", "RuntimeEnvironment", "SCHEMA",
           "metadata_path", "sha256_file", "write_metadata", "read_metadata", "verify_engine_file",
           "check_compatibility", "check_plugin", "check_plugin_major", "is_real_tensorrt", "require_tensorrt",
           "require_cuda", "trt_major", "package_version", "rebuild_hint", "NOT_INSTALLED"]

SCHEMA = "maskrcnn_deploy.engine/1"
NOT_INSTALLED = ("TensorRT is not installed (pip install tensorrt, or NVIDIA's TensorRT packages, on a machine with "
                 "an NVIDIA GPU; see docs/tensorrt.md)")


class TensorRTError(BadInputError, RuntimeError):
    """A TensorRT build or run that cannot go ahead; the message is one line naming the problem and the fix."""


class TensorRTUnavailableError(TensorRTError, BackendUnavailableError):
    """This machine cannot run TensorRT at all: TensorRT missing or too old, no CUDA GPU, or the plugin
    library an engine needs not built here (`maskrcnn-deploy` exits 3, runtime/cli/exit_codes.py)."""


@dataclass
class EngineMetadata:
    """What `maskrcnn-deploy build` records about an engine (see the module docstring)."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str                    # "major.minor", e.g. "9.0"
    precision: str                             # fp32 | fp16 | int8 (the lowest precision the engine may use)
    precision_source: str                      # "graph" (strongly typed) or "builder flags" (TensorRT 10)
    strongly_typed: bool
    input_profile: dict[str, dict[str, list[int]]]   # input -> {"min"|"opt"|"max": shape}
    plugin_library: str | None
    plugin_sha256: str | None
    onnx_path: str
    onnx_sha256: str
    engine_sha256: str
    engine_bytes: int
    package_version: str
    build_time_utc: str
    build_seconds: float
    tf32: bool = True                          # TF32 math allowed for float32 (TensorRT's default; off for fp32 builds)
    builder: dict[str, Any] = field(default_factory=dict)
    onnx_metadata: dict[str, str] = field(default_factory=dict)
    schema: str = SCHEMA


@dataclass(frozen=True)
class RuntimeEnvironment:
    """The machine an engine is about to run on."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str


def metadata_path(engine_path: str | Path) -> Path:
    """`model.engine` -> `model.engine.json`."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


sha256_file = file_digest  # hex SHA-256 of a file's bytes


def rebuild_hint(meta: EngineMetadata | None = None) -> str:
    """The command that makes a fresh engine (named in every refusal)."""
    onnx = meta.onnx_path if meta is not None else "model.onnx"
    return f"rebuild it here with `maskrcnn-deploy build {onnx} -o ENGINE`"


def write_metadata(engine_path: str | Path, meta: EngineMetadata) -> Path:
    """Write `<engine>.json`; returns its path."""
    return write_json(metadata_path(engine_path), dataclasses.asdict(meta), indent=1)


def read_metadata(engine_path: str | Path) -> EngineMetadata:
    """The metadata beside an engine; a missing, unreadable or foreign file is a one-line TensorRTError."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise TensorRTError(f"TensorRT engine not found: {engine_path}")
    path = metadata_path(engine_path)
    if not path.is_file():
        raise TensorRTError(f"{engine_path} has no metadata file {path.name} (it was not built by maskrcnn-deploy, "
                            f"or the file was lost): {rebuild_hint()}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TensorRTError(f"{path} is not readable JSON ({type(exc).__name__}): {rebuild_hint()}") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        found = raw.get("schema") if isinstance(raw, dict) else type(raw).__name__
        raise TensorRTError(f"{path} is not maskrcnn-deploy engine metadata (schema {found!r}, expected {SCHEMA!r}): "
                            f"{rebuild_hint()}")
    names = {f.name for f in dataclasses.fields(EngineMetadata)}
    missing = sorted(n for n in names if n not in raw and n not in ("tf32", "builder", "onnx_metadata", "schema"))
    if missing:
        raise TensorRTError(f"{path} lacks {', '.join(missing)}: {rebuild_hint()}")
    return EngineMetadata(**{k: v for k, v in raw.items() if k in names})


def verify_engine_file(engine_path: str | Path, meta: EngineMetadata) -> None:
    """Refuse an engine file that is not the one the metadata describes (truncated, corrupt or replaced)."""
    engine_path = Path(engine_path)
    size = engine_path.stat().st_size
    if size != meta.engine_bytes or sha256_file(engine_path) != meta.engine_sha256:
        raise TensorRTError(f"{engine_path} does not match its metadata ({size} bytes, the build wrote "
                            f"{meta.engine_bytes}; SHA-256 differs): the file is corrupt or was replaced; "
                            f"{rebuild_hint(meta)}")


def check_compatibility(meta: EngineMetadata, env: RuntimeEnvironment) -> None:
    """Refuse an engine built for another TensorRT version or another GPU model.

    TensorRT plans are tied to the exact TensorRT version and to the GPU they were tuned on (the same
    compute capability at the very least; a different model with the same capability may run slower or
    fail), so any difference is refused before TensorRT deserializes anything.
    """
    if meta.tensorrt_version != env.tensorrt_version:
        raise TensorRTError(f"the engine was built with TensorRT {meta.tensorrt_version}, this is TensorRT "
                            f"{env.tensorrt_version}; engines only run on the version that built them: "
                            f"{rebuild_hint(meta)}")
    if meta.compute_capability != env.compute_capability:
        raise TensorRTError(f"the engine was built for compute capability {meta.compute_capability} "
                            f"({meta.gpu_name}), this GPU is {env.compute_capability} ({env.gpu_name}): "
                            f"{rebuild_hint(meta)}")
    if meta.gpu_name != env.gpu_name:
        raise TensorRTError(f"the engine was built on a {meta.gpu_name}, this GPU is a {env.gpu_name}; TensorRT tunes "
                            f"engines to one GPU model: {rebuild_hint(meta)}")


def check_plugin(meta: EngineMetadata, plugin: str | Path | None) -> None:
    """Refuse a plugin library other than the one the engine was built with (compared by SHA-256)."""
    if meta.plugin_sha256 is None:
        return  # the graph has no custom node: no plugin needed
    if plugin is None or not Path(plugin).is_file():
        raise TensorRTUnavailableError(f"the engine needs the TensorRT plugin library it was built with "
                                       f"({meta.plugin_library}), which is not there: build the plugin "
                                       f"(docs/tensorrt.md) and {rebuild_hint(meta)}")
    found = sha256_file(plugin)
    if found != meta.plugin_sha256:
        raise TensorRTError(f"plugin library {plugin} differs from the one the engine was built with (SHA-256 "
                            f"{found[:12]}... vs {meta.plugin_sha256[:12]}...): {rebuild_hint(meta)}")


def check_plugin_major(plugin: str | Path, tensorrt_version: str) -> None:
    """Refuse a plugin library compiled for another TensorRT major than `tensorrt_version`'s.

    The library works only with the major of its headers (plugins/tensorrt/plugin_library.cpp); it
    records that major in its file, read here without loading the library.
    """
    from maskrcnn_deploy.plugins.tensorrt.build_library import plugin_tensorrt_major

    built_for, running = plugin_tensorrt_major(Path(plugin)), trt_major(tensorrt_version)
    fix = (f"rebuild it against TensorRT {running} headers: python -m maskrcnn_deploy.plugins.tensorrt.build_library "
           f"--tensorrt-root <TensorRT {running} install> (docs/tensorrt.md)")
    if built_for is None:
        raise TensorRTError(f"plugin library {plugin} does not record the TensorRT major it was built for "
                            f"(built before that was recorded, or not this package's plugin): {fix}")
    if built_for != running:
        raise TensorRTError(f"plugin library {plugin} was built for TensorRT {built_for}, this is TensorRT "
                            f"{tensorrt_version}: {fix}")


def is_real_tensorrt(module: ModuleType | None) -> bool:
    """True for NVIDIA's TensorRT bindings; False for nothing, or for the `tensorrt/` folder of .pyi stubs
    that tensorrt-stubs installs (it imports as an empty namespace package)."""
    return module is not None and getattr(module, "Builder", None) is not None


def require_tensorrt(module: ModuleType | None) -> None:
    """One-line TensorRTUnavailableError unless `module` is a real TensorRT 10 or later."""
    if not is_real_tensorrt(module):
        raise TensorRTUnavailableError(NOT_INSTALLED)
    version = str(getattr(module, "__version__", "0"))
    if trt_major(version) < 10:
        raise TensorRTUnavailableError(f"TensorRT {version} is too old: this toolchain uses the TensorRT 10/11 "
                                       "APIs (pip install 'tensorrt>=10')")


def require_cuda() -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of the current CUDA device (cudaGetDeviceProperties, through
    cuda_memory.py: cuda-python or pycuda), or a one-line TensorRTUnavailableError: no CUDA library, no GPU."""
    try:
        return cuda_memory.device_properties()
    except CudaUnavailableError as err:
        raise TensorRTUnavailableError(str(err)) from None


def trt_major(version: str) -> int:
    """"10.13.0.35" -> 10 (0 when unparseable)."""
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def package_version() -> str:
    """This package's installed version (recorded in the metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("maskrcnn-deploy")
    except PackageNotFoundError:
        return "unknown"
