"""`run_divergence`: both graphs on the same preprocessed images, every matched tensor compared.

    report = run_divergence("model.onnx", "model.int8.onnx", "data/val.json", max_images=4)
    report.first_divergent.pair.name, report.rows[k].error.rel_l2

Images are decoded as `check` decodes them (runtime/check.py `load_check_images`) and preprocessed once by
the project's rule for the artifact graph (runtime/predictor.py `Predictor.prepare`: resize by the graph's
recorded `Fit`, pad to its canvas, top up a static batch), so both graphs read the same input array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskrcnn_deploy.common.errors import BadInputError
from maskrcnn_deploy.common.progress import Progress
from maskrcnn_deploy.export.graph_io import graph_fit, read_graph_info, read_onnx, static_input_size
from maskrcnn_deploy.model.config import MaskRCNNConfig
from maskrcnn_deploy.model.data.images import to_float_chw
from maskrcnn_deploy.runtime.check import load_check_images
from maskrcnn_deploy.runtime.diverge.metrics import TensorError, compare_tensor, worst_of
from maskrcnn_deploy.runtime.diverge.report import DEFAULT_THRESHOLD, DivergenceReport, TensorRow
from maskrcnn_deploy.runtime.diverge.runners import graph_runners
from maskrcnn_deploy.runtime.diverge.tensors import MatchedTensors, match_tensors
from maskrcnn_deploy.runtime.predictor import Predictor

__all__ = ["DivergeError", "DEFAULT_IMAGES", "run_divergence", "graph_preprocessor"]

DEFAULT_IMAGES = 4  # every intermediate tensor of both graphs is held per image: a few images suffice


class DivergeError(BadInputError, ValueError):
    """Two graphs that cannot be compared tensor by tensor (different inputs, no tensor names in common)."""


def graph_preprocessor(model, path: str | Path) -> Predictor:
    """A Predictor carrying a deploy graph's preprocessing (config, canvas, static batch, Fit from its metadata),
    as runtime/backend/onnxrt.py `OnnxPredictor` sets it up; only its `prepare` is used."""
    info = read_graph_info(model, path)
    batch, canvas = static_input_size(model)
    config = MaskRCNNConfig.from_dict(info["config"])
    return Predictor(config, canvas, batch, info.get("class_names"), info.get("category_ids"),
                     graph_fit(info, config, canvas))


def _input_dims(model) -> list[int | str]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]


def _check_comparable(reference, artifact, names: tuple[str, str], matched: MatchedTensors) -> None:
    if static_input_size(reference) != static_input_size(artifact):
        raise DivergeError(f"{names[0]} takes images {_input_dims(reference)} but {names[1]} takes "
                           f"{_input_dims(artifact)}: compare graphs exported with the same input size")
    if not matched.pairs:
        raise DivergeError(f"{names[1]} has none of the tensor names of {names[0]}: compare an artifact made from "
                           "this reference (convert --fp16 or calibrate keep its names)")


def _rows(matched: MatchedTensors, errors: dict[str, list[TensorError]]) -> list[TensorRow]:
    """One row per pair that held floats, with the largest error among its node's compared inputs."""
    rows, rel = [], {}
    for pair in matched.pairs:
        if pair.name not in errors:
            continue
        error = worst_of(errors[pair.name])
        rel[pair.name] = error.rel_l2
        inputs = [rel[i] for i in pair.inputs if rel.get(i) is not None]
        rows.append(TensorRow(pair, error, max(inputs) if inputs else None))
    return rows


def run_divergence(reference: str | Path, artifact: str | Path, data: str | Path,
                   max_images: int | None = DEFAULT_IMAGES, threshold: float = DEFAULT_THRESHOLD,
                   threads: int | None = None) -> DivergenceReport:
    """Layer-by-layer error of the ONNX graph `artifact` against the ONNX graph `reference` on the first
    `max_images` images of `data` (a COCO json or a folder); see the package docstring."""
    ref_model, art_model = read_onnx(reference), read_onnx(artifact)
    matched = match_tensors(ref_model, art_model)
    _check_comparable(ref_model, art_model, (str(reference), str(artifact)), matched)
    prep = graph_preprocessor(art_model, artifact)
    loaded = load_check_images(data, max_images)
    ref_runner, art_runner = graph_runners(ref_model, art_model, matched, threads, (reference, artifact))
    errors: dict[str, list[TensorError]] = {}
    not_float: set[str] = set()
    progress = Progress(len(loaded.images), "diverge", interval=5.0)
    input_shape: list[int] = []
    with ref_runner, art_runner:
        for k, image in enumerate(loaded.images):
            batch, sizes = prep.prepare([to_float_chw(image)])  # [B,3,H,W], [B,2]
            input_shape = [int(d) for d in batch.shape]
            feed = {"images": batch, "image_sizes": sizes}
            ref_out, art_out = ref_runner.infer(feed), art_runner.infer(feed)
            for pair in matched.pairs:
                ref, art = np.asarray(ref_out[pair.name]), np.asarray(art_out[pair.artifact])
                if ref.dtype.kind != "f" or art.dtype.kind != "f":
                    not_float.add(pair.name)
                    continue
                errors.setdefault(pair.name, []).append(compare_tensor(ref, art))
            del ref_out, art_out
            progress.update(k + 1)
    return DivergenceReport(str(reference), str(artifact), [Path(p).name for p in loaded.paths], input_shape,
                            threshold, _rows(matched, {n: e for n, e in errors.items() if n not in not_float}),
                            list(matched.not_in_artifact), [p.name for p in matched.pairs if p.name in not_float])
