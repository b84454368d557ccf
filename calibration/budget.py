"""Accuracy budget for INT8: per-group sensitivity sweep, then the cheapest fallback that fits.

    evalset = EvalSet.from_data("data/val.json", num_images=50)
    result = search_budget(graph, amax, region, evalset, evaluate, max_ap_drop=0.5)

`evaluate(model, evalset) -> {"bbox": AP points, "segm": AP points}` scores a candidate graph; the caller
passes it (the runtime's is runtime/evaluate.py `graph_evaluator`: ONNX Runtime), so calibration never
imports a runtime.

1. baseline : segm/bbox AP of the float graph on the held-out images.
2. sweep    : for each layer group alone, quantize it (everything else float) and measure the
              segm AP drop; rank groups by drop, most sensitive first.
3. search   : quantize every group; while the drop exceeds the budget, return the most sensitive
              group still in INT8 to float and measure again.
With a `Journal`, every measurement is recorded as it finishes and a rerun skips those it holds.
Each search step measures the graph that would be written (`build`: Q/DQ for the INT8 groups, the
float groups in float16 when that is the fallback), so "met" holds for the shipped graph on the
held-out images. AP is in points (AP x 100), as `--max-ap-drop` is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx

from maskrcnn_deploy.calibration.deploy_graph import DeployGraph
from maskrcnn_deploy.calibration.qdq import quantize_qdq
from maskrcnn_deploy.calibration.regions import PrecisionError, Region
from maskrcnn_deploy.common.files import Journal
from maskrcnn_deploy.common.progress import Progress

__all__ = ["EvalSet", "Evaluate", "GroupSensitivity", "BudgetResult", "sensitivity_sweep", "search_budget"]


@dataclass
class EvalSet:
    """Held-out images with COCO ground truth."""

    images: list[Path]
    coco: object  # pycocotools COCO
    image_ids: list[int]

    @classmethod
    def from_data(cls, data: str | Path, num_images: int | None = None) -> "EvalSet":
        from maskrcnn_deploy.model.data.coco import (
            ImageLoadError,
            images_and_annotations,
            report_unreadable,
            unreadable_images,
        )

        images, coco, ids = images_and_annotations(data, num_images)
        if coco is None:
            raise PrecisionError(f"the accuracy budget needs ground truth: give --eval-data a COCO json, not the "
                                 f"image folder {data}")
        failures = unreadable_images(images)  # before the long sweep, not in its middle
        if failures:
            raise ImageLoadError(f"{report_unreadable(failures, len(images))}: fix them, or give --eval-data "
                                 "annotations without them")
        return cls(images, coco, ids)


# evaluate(model, evalset) -> {"bbox": AP points, "segm": AP points} of a deploy graph on the held-out images
Evaluate = Callable[[onnx.ModelProto, EvalSet], dict[str, float]]


@dataclass
class GroupSensitivity:
    group: str
    segm_ap: float
    bbox_ap: float
    drop: float  # baseline segm AP - segm AP with only this group in INT8 (points)


@dataclass
class BudgetResult:
    baseline: dict[str, float]  # float graph AP (points)
    sweep: list[GroupSensitivity]  # most sensitive first
    int8_groups: list[str]
    float_groups: list[str]  # returned to float to meet the budget, most sensitive first
    final: dict[str, float]  # AP of the chosen mix
    met: bool
    steps: list[dict] = field(default_factory=list)  # {"float_groups": [...], "segm": .., "bbox": ..}
    model: onnx.ModelProto | None = None  # the chosen graph, as `build` made it

    def summary_lines(self) -> list[str]:
        lines = [f"baseline: segm AP {self.baseline['segm']:.2f}, bbox AP {self.baseline['bbox']:.2f}",
                 "sensitivity (segm AP drop with only this group in INT8):"]
        lines += [f"  {s.group:40s} {s.drop:+.2f}" for s in self.sweep]
        for step in self.steps:
            kept = ", ".join(step["float_groups"]) or "none"
            lines.append(f"INT8 with float groups [{kept}]: segm AP {step['segm']:.2f} "
                         f"(drop {self.baseline['segm'] - step['segm']:.2f}), bbox AP {step['bbox']:.2f}")
        lines.append(("budget met" if self.met else "budget NOT met") +
                     f": {len(self.int8_groups)} groups INT8, {len(self.float_groups)} float")
        return lines


def sensitivity_sweep(graph: DeployGraph, amax: dict[str, float], region: Region, evalset: EvalSet,
                      baseline: dict[str, float], evaluate: Evaluate,
                      journal: Journal | None = None) -> list[GroupSensitivity]:
    """Each layer group quantized alone, scored by `evaluate`; most sensitive (largest segm AP drop) first.

    journal: groups it holds are not measured again; each new measurement is recorded as it finishes.
    """
    groups = region.group_names()
    done = sum(f"sweep:{group}" in journal for group in groups) if journal is not None else 0
    if done:
        print(f"resuming: {done} of {len(groups)} groups already measured ({journal.path})", flush=True)
    progress = Progress(len(groups), "sensitivity sweep", interval=0.0, start=done)
    rows = []
    for group in groups:
        resumed = journal is not None and f"sweep:{group}" in journal
        ap = _measure(journal, f"sweep:{group}",
                      lambda: evaluate(quantize_qdq(graph.model, amax, region.nodes([group])), evalset))
        if not resumed:
            progress.update(None, f"{group}: drop {baseline['segm'] - ap['segm']:+.2f}")
        rows.append(GroupSensitivity(group, ap["segm"], ap["bbox"], baseline["segm"] - ap["segm"]))
    return sorted(rows, key=lambda r: (-r.drop, -baseline["bbox"] + r.bbox_ap))


def _measure(journal: Journal | None, step: str, evaluate) -> dict[str, float]:
    """The journal's AP for `step`, or `evaluate()` recorded in the journal as soon as it returns."""
    if journal is not None and step in journal:
        return journal.get(step)
    ap = evaluate()
    if journal is not None:
        journal.record(step, ap)
    return ap


def search_budget(graph: DeployGraph, amax: dict[str, float], region: Region, evalset: EvalSet,
                  evaluate: Evaluate, max_ap_drop: float = 0.5, baseline: dict[str, float] | None = None,
                  build=None, journal: Journal | None = None) -> BudgetResult:
    """Sweep, then return the most sensitive groups to float until the segm AP drop <= max_ap_drop.

    evaluate(model, evalset) -> {"bbox": AP points, "segm": AP points} (see `Evaluate`); tests pass a stand-in.
    build(int8_groups, float_groups) -> the candidate graph; default: Q/DQ for the INT8 groups, the
    rest float32.
    journal: every AP measured (baseline, sweep, search steps) is recorded there as it finishes, and
    one it already holds is not measured again, so an interrupted search resumes where it stopped.
    Its key must cover everything the measurements depend on (graph, ranges, evalset, build); the
    budget is not part of it: the measurements hold for any budget.
    """
    if max_ap_drop < 0:
        raise PrecisionError(f"--max-ap-drop must be >= 0 AP points, got {max_ap_drop}")
    if build is None:
        def build(int8_groups, float_groups):
            return quantize_qdq(graph.model, amax, region.nodes(int8_groups))
    baseline = baseline or _measure(journal, "baseline", lambda: evaluate(graph.model, evalset))
    if baseline["segm"] <= 0:
        raise PrecisionError("the float graph scores segm AP 0 on --eval-data: an AP budget cannot be measured "
                             "(wrong data for this model?)")
    sweep = sensitivity_sweep(graph, amax, region, evalset, baseline, evaluate, journal)
    order = [s.group for s in sweep]
    float_groups: list[str] = []
    steps = []
    while True:
        int8 = [g for g in region.group_names() if g not in float_groups]
        built = {}

        def measure():
            built["model"] = build(int8, float_groups)
            return evaluate(built["model"], evalset)

        ap = _measure(journal, f"search:{json.dumps(float_groups)}", measure)
        steps.append({"float_groups": list(float_groups), "segm": ap["segm"], "bbox": ap["bbox"]})
        met = baseline["segm"] - ap["segm"] <= max_ap_drop
        print(f"budget search: {len(int8)} groups INT8, segm AP drop {baseline['segm'] - ap['segm']:.2f} "
              f"(budget {max_ap_drop:.2f})", flush=True)
        if met or len(float_groups) == len(order):
            model = built["model"] if built else build(int8, float_groups)  # a resumed step was not built
            return BudgetResult(baseline, sweep, int8, float_groups, ap, met, steps, model)
        float_groups.append(order[len(float_groups)])
