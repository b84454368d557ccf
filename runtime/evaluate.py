"""COCO evaluation of models through the predictor interface (runtime/predictor.py).

    evaluate_predictor(load("model.pt"), CocoDetectionDataset("data/val.json"))   # `maskrcnn-deploy eval`
    calibrate_int8(options, evaluate=graph_evaluator(threads))                   # the INT8 AP budget

Any predictor is evaluated the same way (a checkpoint runs as the original eager model, `EagerPredictor`;
an .onnx or a TensorRT engine as itself), and every AP comes from model/evaluation.py.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from maskrcnn_deploy.common.files import Journal, file_digest, inputs_key
from maskrcnn_deploy.common.progress import Progress
from maskrcnn_deploy.model.evaluation import coco_ap, detections_to_coco_results, evaluate_coco
from maskrcnn_deploy.runtime.predictor import Predictor

if TYPE_CHECKING:
    from maskrcnn_deploy.calibration.budget import EvalSet, Evaluate

__all__ = ["category_ids_of", "evaluation_journal", "eval_batches", "evaluate_batch", "coco_metrics", "evaluate_predictor",
           "graph_ap", "graph_evaluator"]


def category_ids_of(predictor: Predictor) -> list[int]:
    """Contiguous label -> COCO category id of a predictor's model (identity when the model records none)."""
    return predictor.category_ids or list(range(predictor.config.num_classes))


def evaluation_journal(path: str | Path, model_path: str | Path, dataset, batch_size: int, max_images: int | None,
                       mask_threshold: float = 0.5, resume: bool = True) -> Journal:
    """The journal `evaluate_predictor` records each image's COCO results in, keyed by the model file's
    bytes, the annotations' bytes, every image file (name, size, modification time) and the settings:
    a rerun of the same evaluation resumes from it, any other starts afresh."""
    images = [dataset.image_path(i) for i in range(len(dataset))]
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else (p.name, None) for p in images]
    key = inputs_key("eval", file_digest(model_path), file_digest(dataset.ann_file), stats, batch_size,
                     max_images, mask_threshold)
    return Journal(path, key, "eval: COCO results per image", resume=resume)


def eval_batches(dataset, batch_size: int, max_images: int | None = None) -> list[list[int]]:
    """The dataset indices of each batch an evaluation runs, in order: consecutive runs of `batch_size` over
    the first `max_images` images. Every path (here, resumed, on Ray workers) runs these same batches, because
    a predictor's detections may depend on which images share a batch (padding)."""
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    return [list(range(start, min(start + batch_size, n))) for start in range(0, n, batch_size)]


def evaluate_batch(predictor: Predictor, dataset, indices: list[int], batch_size: int,
                   mask_threshold: float = 0.5) -> dict[str, list[dict]]:
    """One batch's step: str(COCO image id) -> that image's COCO results (labels mapped by the dataset's
    category_ids). Shared by `evaluate_predictor` and the Ray workers (runtime/distributed.py)."""
    images = [dataset[i][0] for i in indices]  # float [3,H,W] in 0-1
    dets = predictor.predict(images, batch_size=batch_size, mask_threshold=mask_threshold)
    ids = [int(dataset.image_ids[i]) for i in indices]
    return {str(image_id): detections_to_coco_results(image_id, det, dataset.category_ids)
            for image_id, det in zip(ids, dets)}


def coco_metrics(dataset, image_ids: list[int], results_of: dict[str, list[dict]]) -> dict:
    """The final aggregation: COCO bbox and segm metrics of every image's results (`results_of`, keyed by
    str(image id)), with num_images and num_detections; computed once, in this process."""
    results = [r for i in image_ids for r in results_of[str(i)]]
    metrics = evaluate_coco(dataset.coco, results, image_ids=image_ids)
    metrics["num_images"] = len(image_ids)
    metrics["num_detections"] = len(results)
    return metrics


def evaluate_predictor(predictor: Predictor, dataset, batch_size: int = 2, mask_threshold: float = 0.5,
                       max_images: int | None = None, show_progress: bool = True,
                       journal: Journal | None = None) -> dict:
    """COCO bbox and segm AP of `predictor` on a `CocoDetectionDataset` (labels mapped by the dataset's
    category_ids).

    Returns `{"bbox": {"AP": ..., ...}, "segm": {...}, "num_images": n, "num_detections": d}`.
    journal: each image's COCO results are recorded there as its batch finishes, and batches whose
    images it already holds are skipped; batches are the same as an uninterrupted run's, so a
    resumed evaluation gives exactly the same metrics. The caller removes it after using the result.
    """
    batches = eval_batches(dataset, batch_size, max_images)
    image_ids = [int(dataset.image_ids[i]) for batch in batches for i in batch]
    results_of = journal.entries if journal is not None else {}  # str(image id) -> COCO results
    done = sum(str(i) in results_of for i in image_ids)
    if done:
        print(f"resuming: {done} of {len(image_ids)} images already evaluated ({journal.path})", file=sys.stderr)
    progress = Progress(len(image_ids), "eval", interval=5.0, start=done) if show_progress else None
    for batch in batches:
        if all(str(int(dataset.image_ids[i])) in results_of for i in batch):
            continue
        for image_id, results in evaluate_batch(predictor, dataset, batch, batch_size, mask_threshold).items():
            if journal is not None:
                journal.record(image_id, results)
            else:
                results_of[image_id] = results
        if progress:
            progress.update(batch[-1] + 1)
    return coco_metrics(dataset, image_ids, results_of)


def graph_ap(model: onnx.ModelProto, evalset: EvalSet, threads: int | None = None,
             backend: str = "auto") -> dict[str, float]:
    """{"bbox": AP points, "segm": AP points} (AP x 100) of a deploy graph on `evalset`, in ONNX Runtime or the
    `backend` runtime/load.py names ("openvino")."""
    from maskrcnn_deploy.runtime.load import load

    with tempfile.TemporaryDirectory(prefix="mrd_eval_") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        predictor = load(path, threads=threads, backend=backend)
        # one image per call: run_session holds a Ctrl-C until the graph returns
        detections = [predictor.predict([image])[0] for image in evalset.images]
    metrics = coco_ap(evalset.coco, evalset.image_ids, detections, category_ids_of(predictor))
    return {kind: 100.0 * metrics[kind]["AP"] for kind in ("bbox", "segm")}


def graph_evaluator(threads: int | None = None, backend: str = "auto") -> Evaluate:
    """The evaluator the INT8 AP budget takes (calibration/budget.py `Evaluate`): `graph_ap` with ONNX
    Runtime's intra-op `threads` (or `backend`'s, e.g. "openvino")."""
    return lambda model, evalset: graph_ap(model, evalset, threads, backend)
