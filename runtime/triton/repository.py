"""`write_repository(artifact, out)`: a Triton model repository serving the artifact (docs/serving.md).

    OUT/<name>/config.pbtxt, 1/                 the ensemble clients call: IMAGE bytes -> detections
    OUT/<name>_preprocess/config.pbtxt, 1/model.py, 1/graph.json
    OUT/<name>_model/config.pbtxt, 1/model.onnx | 1/model.plan
    OUT/<name>_postprocess/config.pbtxt, 1/model.py, 1/graph.json

Every file is written whole and renamed into place together (common/files.py), so an interrupted run leaves the
previous repository's files as they were.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from maskrcnn_deploy.common.errors import UsageError
from maskrcnn_deploy.common.files import atomic_write_all
from maskrcnn_deploy.runtime.triton.artifact import ServedModel, served_model
from maskrcnn_deploy.runtime.triton.configs import (
    ensemble_config,
    main_config,
    model_names,
    postprocess_config,
    preprocess_config,
)
from maskrcnn_deploy.runtime.triton.stages import SETTINGS_FILE

__all__ = ["Repository", "write_repository", "MODEL_PY"]

MODEL_PY = ('"""Triton Python-backend model: the {role} step of the {name} ensemble, written by `maskrcnn-deploy '
            'package triton`.\n\nIts code is maskrcnn_deploy.runtime.triton.model (pip install maskrcnn-deploy in the '
            'server\'s Python); its settings are graph.json beside this file."""\n\n'
            'from maskrcnn_deploy.runtime.triton.model import TritonPythonModel  # noqa: F401\n')
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Repository:
    """What `write_repository` wrote."""

    root: Path
    names: dict[str, str]   # ensemble, preprocess, model, postprocess -> model name
    served: ServedModel
    files: list[Path]


def _text_writer(text: str):
    return lambda tmp: tmp.write_text(text, encoding="utf-8")


def write_repository(artifact: str | Path, out: str | Path, name: str = "maskrcnn", instances: int = 1,
                     max_batch: int | None = None, onnx_path: str | Path | None = None) -> Repository:
    """Write the repository for `artifact` (.onnx with standard ops, or .engine/.plan) under `out`."""
    if not _NAME.match(name):
        raise UsageError(f"--name {name!r}: use letters, digits, '_', '-' or '.' (it names Triton models and folders)")
    if instances < 1:
        raise UsageError(f"--instances must be >= 1, got {instances}")
    served = served_model(artifact, max_batch, onnx_path)
    root, names = Path(out), model_names(name)
    settings = json.dumps(served.settings, indent=1) + "\n"
    writes = {
        root / names["ensemble"] / "config.pbtxt": _text_writer(ensemble_config(served, name)),
        root / names["model"] / "config.pbtxt": _text_writer(main_config(served, name, instances)),
        root / names["model"] / "1" / served.filename: lambda tmp: shutil.copyfile(served.source, tmp),
    }
    for role, config in (("preprocess", preprocess_config), ("postprocess", postprocess_config)):
        folder = root / names[role]
        writes[folder / "config.pbtxt"] = _text_writer(config(served, name, instances))
        writes[folder / "1" / "model.py"] = _text_writer(MODEL_PY.format(role=role, name=name))
        writes[folder / "1" / SETTINGS_FILE] = _text_writer(settings)
    files = atomic_write_all(writes)
    (root / names["ensemble"] / "1").mkdir(exist_ok=True)  # Triton requires a version folder, empty for an ensemble
    return Repository(root, names, served, files)
