"""The parity check as a library: run a reference and an artifact over the same images, then compare.

    run = run_check("model.pt", "model.onnx", "data/val.json", tolerances_from("fp32"))
    run.report.passed, run.report.failures        # parity.ParityReport
    run.reference.ap, run.artifact.latencies_s    # one SideRun per model

Images are decoded once and the same tensors go to both sides, resized by the same rule (the artifact's
`Fit`: a static graph's canvas caps the scale), so a difference can only come from the models. A
checkpoint reference runs as the original eager `MaskRCNN` (runtime/backend/pytorch.py `EagerPredictor`), so
whatever the deploy rewrite changes is caught. `maskrcnn-deploy check` (runtime/cli/check.py) and the
demo (runtime/demo.py) are thin layers over `run_check`; runtime/report_html.py turns a CheckRun into an
HTML page. `check --ray` (runtime/distributed.py) runs the same per-image step (`timed_predict`) on Ray
workers and the same aggregation (`side_run`, `finish_check`) here.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from pycocotools.coco import COCO

from maskrcnn_deploy.common.progress import Progress
from maskrcnn_deploy.model.data.images import ImageLoadError, images_and_annotations, load_rgb
from maskrcnn_deploy.model.evaluation import coco_ap
from maskrcnn_deploy.runtime import parity
from maskrcnn_deploy.runtime.evaluate import category_ids_of
from maskrcnn_deploy.runtime.load import load
from maskrcnn_deploy.runtime.predictor import Predictor

__all__ = ["SideRun", "CheckRun", "CheckImages", "load_check_images", "PredictorInfo", "load_pair", "timed_predict",
           "side_run", "finish_check", "predict_side", "run_check", "DetectionMatch", "rank_matches"]


@dataclass
class SideRun:
    """One model run over the check images."""

    path: str
    backend: str                # predictor.backend: pytorch | onnxruntime | tensorrt
    detections: list[dict]      # one detection dict per image (predictor.predict output)
    ap: dict | None             # coco_ap result {"bbox": {"AP": ..}, "segm": {..}} (0-1); None: no annotations
    latencies_s: list[float]    # wall seconds of predictor.predict([image]) per image (image already decoded)
    class_names: list[str] | None = None  # predictor.class_names (index = label), for drawing
    max_detections: int | None = None     # the detection cap (PredictorInfo.max_detections)


@dataclass
class CheckRun:
    """Both sides' runs and their parity report; image_paths[i] is the image of detections[i]."""

    report: parity.ParityReport
    reference: SideRun
    artifact: SideRun
    image_paths: list[Path]
    unreadable: dict[Path, str] = field(default_factory=dict)  # images of a --data folder left out -> why


@dataclass
class CheckImages:
    paths: list[Path]
    images: list[np.ndarray]          # decoded uint8 [H,W,3] (model/data/images.py load_rgb)
    coco: COCO | None                 # None for a folder of images (no AP)
    ids: list[int] | None
    unreadable: dict[Path, str] = field(default_factory=dict)  # folder images left out -> why


def load_check_images(data: str | Path, max_images: int | None = None) -> CheckImages:
    """The images of `data`: a COCO json (AP is computed) or a folder of images; the first `max_images`
    (sorted by COCO id, or by file name in a folder).

    In a folder, an unreadable file is reported on stderr (one line: the file and why), left out and
    listed in `unreadable`; the caller's exit code says so. A COCO json's images must all load (AP
    needs every annotated image). ImageLoadError/AnnotationError (one line) on bad input.
    """
    paths, coco, ids = images_and_annotations(data, max_images)
    if coco is not None:
        return CheckImages(paths, [load_rgb(p) for p in paths], coco, ids)
    readable, images, unreadable = [], [], {}
    for path in paths:
        try:
            images.append(load_rgb(path))
            readable.append(path)
        except ImageLoadError as err:
            unreadable[Path(path)] = str(err)
            print(err, file=sys.stderr)
    if not images:
        raise ImageLoadError(f"none of the {len(paths)} images in {data} could be read (see above)")
    return CheckImages(readable, images, None, None, unreadable)


@dataclass(frozen=True)
class PredictorInfo:
    """What the report needs of a loaded predictor (a Ray worker sends it back instead of the predictor)."""

    backend: str                      # predictor.backend
    class_names: list[str] | None     # index = label
    category_ids: list[int]           # label -> COCO category id (runtime/evaluate.py category_ids_of)
    max_detections: int | None = None  # the detection cap (config detections_per_img)

    @classmethod
    def of(cls, predictor: Predictor) -> PredictorInfo:
        return cls(predictor.backend, predictor.class_names, category_ids_of(predictor),
                   predictor.config.detections_per_img)


def load_pair(reference: str | Path, artifact: str | Path, threads: int | None = None,
              checkpoint: dict | None = None, backend: str = "auto") -> tuple[Predictor, Predictor]:
    """(reference, artifact) predictors. The artifact is loaded first (by `backend`, runtime/load.py BACKENDS): a
    missing backend or a corrupt file fails in seconds, not after the reference pass; a checkpoint reference
    resizes as the artifact does, so both sides see the same pixels."""
    artifact_predictor = load(artifact, threads=threads, backend=backend)
    reference_predictor = load(reference, threads=threads, fit=artifact_predictor.fit, **(checkpoint or {}))
    return reference_predictor, artifact_predictor


def timed_predict(predictor: Predictor, image: np.ndarray) -> tuple[dict, float]:
    """One decoded image through one predictor: its detection dict and the wall seconds of the call.
    The per-image step of `predict_side` and of the Ray workers (runtime/distributed.py)."""
    t0 = time.perf_counter()
    detection = predictor.predict([image])[0]
    return detection, time.perf_counter() - t0


def side_run(path: str | Path, info: PredictorInfo, detections: list[dict], latencies_s: list[float],
             coco: COCO | None, ids: Sequence[int] | None) -> SideRun:
    """One side's SideRun from its per-image results (image order), with its COCO AP (None without annotations)."""
    ap = None if coco is None else coco_ap(coco, ids, detections, info.category_ids)
    return SideRun(path=str(path), backend=info.backend, detections=detections, ap=ap, latencies_s=latencies_s,
                   max_detections=info.max_detections,
                   class_names=info.class_names)


def finish_check(ref: SideRun, art: SideRun, tolerances: parity.Tolerances, paths: Sequence[Path],
                 unreadable: dict[Path, str] | None = None) -> CheckRun:
    """The parity report of two finished sides: matching, AP deltas, verdict. Computed once, in this process,
    however the per-image results were obtained (here or on Ray workers)."""
    caps = [side.max_detections for side in (ref, art) if side.max_detections]
    report = parity.check_parity(ref.detections, art.detections, tolerances, ref_ap=ref.ap, test_ap=art.ap,
                                 max_detections=min(caps) if len(caps) == 2 else None)
    return CheckRun(report=report, reference=ref, artifact=art, image_paths=list(paths), unreadable=unreadable or {})


def predict_side(path: str | Path, images: Sequence[np.ndarray], coco: COCO | None, ids: Sequence[int] | None,
                 role: str, threads: int | None = None, predictor: Predictor | None = None) -> SideRun:
    """Run one model (`predictor`, or `load(path)`) on `images` one at a time, timing each call; with a
    progress line labelled `role` ("reference", "artifact")."""
    predictor = predictor if predictor is not None else load(path, threads=threads)
    progress = Progress(len(images), f"{role} ({predictor.backend})", interval=5.0)
    detections, latencies = [], []
    for i, image in enumerate(images):
        detection, seconds = timed_predict(predictor, image)
        detections.append(detection)
        latencies.append(seconds)
        progress.update(i + 1)
    return side_run(path, PredictorInfo.of(predictor), detections, latencies, coco, ids)


def run_check(reference: str | Path, artifact: str | Path, data: str | Path, tolerances: parity.Tolerances,
              max_images: int | None = None, threads: int | None = None,
              reference_run: SideRun | None = None, checkpoint: dict | None = None, backend: str = "auto") -> CheckRun:
    """Parity of `artifact` against `reference` on the images of `data` (see load_check_images).

    reference_run: a finished run of the reference over the same images (the demo checks several
    artifacts against one PyTorch run); `reference` is then not loaded again. checkpoint: how to read a
    checkpoint reference ({"source": .., "bn_eps": ..}, see model/checkpoint.py `load_checkpoint`). backend: what
    runs an .onnx artifact (runtime/load.py BACKENDS); the reference runs as `load` chooses by its suffix.
    """
    loaded = load_check_images(data, max_images)
    paths, images, coco, ids = loaded.paths, loaded.images, loaded.coco, loaded.ids
    if reference_run is not None and len(reference_run.detections) != len(images):
        raise ValueError(f"the reference run has {len(reference_run.detections)} images but {data} gives "
                         f"{len(images)}: run the reference on the same data and --max-images")
    if reference_run is not None and (reference_run.ap is None) != (coco is None):
        raise ValueError("the reference run and the check data disagree on whether there are annotations: "
                         "run the reference on the same data")
    ref = reference_run
    if ref is None:
        reference_predictor, artifact_predictor = load_pair(reference, artifact, threads, checkpoint, backend)
        ref = predict_side(reference, images, coco, ids, "reference", threads, predictor=reference_predictor)
    else:
        artifact_predictor = load(artifact, threads=threads, backend=backend)
    art = predict_side(artifact, images, coco, ids, "artifact", threads, predictor=artifact_predictor)
    return finish_check(ref, art, tolerances, paths, loaded.unreadable)


@dataclass
class DetectionMatch:
    """One matched pair, or one detection without partner, of one image (indices into that image's detections)."""

    image: int                  # index into CheckRun.image_paths
    reference: int | None       # reference detection (None: an artifact detection without partner)
    artifact: int | None        # artifact detection (None: a reference detection without partner)
    box_iou: float | None       # None for a detection without partner
    mask_iou: float | None
    box_error_px: float | None  # max |coordinate difference|, original pixels
    severity: float             # 0-1, see rank_matches

    @property
    def matched(self) -> bool:
        return self.reference is not None and self.artifact is not None


def rank_matches(run: CheckRun) -> list[DetectionMatch]:
    """Every pair and every detection without partner of every image, worst (highest severity) first.

    Matching is check_parity's (same match IoU), so the entries add up to the report's counts.
    Severity is how much of a confident detection is lost, like its weight in AP: a detection without
    partner counts its score; a pair, 1 - its lower IoU (box or mask), times its higher score. So a
    near-threshold detection missing on one side ranks below a confident pair whose masks differ.
    """
    entries = []
    match_iou = run.report.tolerances.match_iou
    for i, (ref, art) in enumerate(zip(run.reference.detections, run.artifact.detections)):
        m = parity.match_detections(ref, art, match_iou)
        for k, (r, a) in enumerate(m.pairs.tolist()):
            box, mask = float(m.box_iou[k]), float(m.mask_iou[k])
            score = max(float(ref["scores"][r]), float(art["scores"][a]))
            severity = score * (1.0 - min(box, mask))
            entries.append(DetectionMatch(i, r, a, box, mask, float(m.box_error_px[k]), severity))
        for r in m.unmatched_ref.tolist():
            entries.append(DetectionMatch(i, r, None, None, None, None, float(ref["scores"][r])))
        for a in m.unmatched_test.tolist():
            entries.append(DetectionMatch(i, None, a, None, None, None, float(art["scores"][a])))
    return sorted(entries, key=lambda e: -e.severity)  # stable: ties keep image order
