"""The optional extras of `pip install maskrcnn-deploy[...]` (pyproject.toml) and `require_extra`, which turns a
missing one into a `MissingExtraError`: one line naming the extra to install, exit code 3.

The base install runs predict, check and bench on .onnx graphs and engines with numpy (no torch). Each extra
adds the packages of some commands:

    export     torch, torchvision, onnxscript   train, export, eval/predict/check/bench of .pt checkpoints, demo
    calibrate  onnxconverter-common             convert --fp16, calibrate (its fp16 fallback)
    tensorrt   cuda-python's bindings           TensorRT engines (TensorRT itself: NVIDIA's wheels or JetPack)
    openvino   OpenVINO                         --backend openvino and its CPU INT8 flavour
    ray        Ray (with Ray Data)              check/eval/bench --ray: images spread over a Ray cluster
    triton     tritonclient (gRPC)              package triton's client example; parsing config.pbtxt
"""

from __future__ import annotations

import importlib

from maskrcnn_deploy.common.errors import MissingExtraError

__all__ = ["EXTRAS", "extra_of", "require_extra", "missing_extra_error"]

# extra -> (what it brings, in words; the top-level modules it installs)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "export": ("PyTorch", ("torch", "torchvision", "onnxscript")),
    "calibrate": ("onnxconverter-common", ("onnxconverter_common",)),
    "tensorrt": ("cuda-python", ("cuda",)),
    "openvino": ("OpenVINO", ("openvino",)),
    "ray": ("Ray", ("ray",)),
    "triton": ("tritonclient", ("tritonclient",)),
}


def extra_of(module: str) -> str | None:
    """The extra that installs `module` ("torch.nn" -> "export"), or None for a base or unknown module."""
    top = module.split(".")[0]
    return next((extra for extra, (_, modules) in EXTRAS.items() if top in modules), None)


def missing_extra_error(extra: str, needed_by: str, module: str) -> MissingExtraError:
    """The one-line error: `needed_by` (e.g. "`maskrcnn-deploy export`") needs `extra`, whose `module` is missing."""
    what = EXTRAS[extra][0]
    return MissingExtraError(f"{needed_by} needs {what} (module {module} is not installed): "
                             f"pip install 'maskrcnn-deploy[{extra}]'")


def require_extra(extra: str, needed_by: str, modules: tuple[str, ...] | None = None) -> None:
    """Import the modules of `extra` (all of them unless `modules` names some); MissingExtraError naming the extra
    when one is not installed. Call it first on a command's path, before the library imports them."""
    for module in modules if modules is not None else EXTRAS[extra][1]:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name is None or err.name.split(".")[0] != module.split(".")[0]:
                raise  # the module is there but one of its own dependencies is not: a broken install, not an extra
            raise missing_extra_error(extra, needed_by, module) from None
