"""The INT8 flow end to end: ranges -> budget -> Q/DQ graph, TensorRT cache, precision report.

    result = calibrate_int8(CalibrateOptions(model="m.onnx", data="data/train.json", output="m.int8.onnx",
                                             eval_data="data/val.json"), evaluate=graph_evaluator(threads))

evaluate: how the AP budget scores a candidate graph (budget.Evaluate); needed with `eval_data`. The
runtime passes its own (runtime/evaluate.py `graph_evaluator`: ONNX Runtime), so calibration imports no
runtime.

Writes, beside `output`: the Q/DQ graph, `<stem>.cache` (TensorRT 10.x calibration cache: the Q/DQ
graph's activation scales), `<stem>.precision.json` + `.md` (every node's precision, precision_report.py; the
TensorRT builder reads the JSON) and `<stem>.ranges.json` (amax of every calibrated tensor, reusable by `convert --fp16`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

from maskrcnn_deploy.calibration.budget import EvalSet, Evaluate, search_budget
from maskrcnn_deploy.calibration.data import CalibrationBatches
from maskrcnn_deploy.calibration.deploy_graph import DeployGraph, load_float_graph
from maskrcnn_deploy.calibration.precision_report import NodePrecision, report_paths, report_texts
from maskrcnn_deploy.calibration.qdq import activation_scales, quantize_qdq
from maskrcnn_deploy.calibration.ranges import collect_ranges, region_tensors
from maskrcnn_deploy.calibration.regions import PrecisionError, Region, find_region
from maskrcnn_deploy.calibration.trt_cache import DEFAULT_TRT_VERSION, calibration_cache_text
from maskrcnn_deploy.common.files import Journal, atomic_write, atomic_write_all, file_digest, inputs_key

__all__ = ["CalibrateOptions", "calibrate_int8", "precision_rows", "save_checked", "REPORT_TITLE"]

REPORT_TITLE = "INT8 calibration"  # the heading of `calibrate`'s precision report


@dataclass
class CalibrateOptions:
    model: str | Path
    data: str | Path
    output: str | Path
    method: str = "percentile"  # max | percentile | entropy
    percentile: float = 99.99
    num_images: int = 64
    batch_size: int = 1
    num_bins: int = 2048
    eval_data: str | Path | None = None  # COCO json held out from calibration: enables the AP budget
    eval_images: int = 50
    max_ap_drop: float = 0.5  # segm AP points
    fallback: str = "fp16"  # precision of the groups the budget returns to float: fp16 | fp32
    trt_version: str = DEFAULT_TRT_VERSION
    cache_algorithm: str = "EntropyCalibration2"
    threads: int | None = None  # ONNX Runtime threads of the evaluator (bound by the caller; part of the budget key)
    evaluator: str = "auto"  # the runtime the caller's evaluator runs graphs in (runtime/load.py BACKENDS; budget key)
    resume: bool = True  # continue an interrupted run with the same inputs from its progress files


def save_checked(model: onnx.ModelProto, path: str | Path) -> None:
    """Save atomically, checked like the exporter checks: full checker (strict shape inference) and an
    ORT session; a graph that fails leaves no file behind (and the previous one in place)."""
    atomic_write(path, lambda tmp: _save_and_check(model, tmp))


def _save_and_check(model: onnx.ModelProto, path: Path) -> None:
    from maskrcnn_deploy.export.onnx_ops import register_schema
    from maskrcnn_deploy.plugins.onnxruntime_op import load_session

    onnx.save(model, str(path))
    register_schema()  # our op's schema, for the checker and shape inference
    onnx.checker.check_model(str(path), full_check=True)
    load_session(onnx.load(str(path)), name=path)


def precision_rows(model: onnx.ModelProto, region: Region, int8_groups, fp16_plan=None) -> list[NodePrecision]:
    """One row per node of the float graph: int8 for the INT8 groups, fp16/fp32 with a reason for the rest.

    fp16_plan: `fp16.plan_precision` rows of the float groups' nodes when they fall back to float16
    (a node the plan keeps in float32 says why); without it the float groups are float32. max_abs stays
    None: the calibrated ranges are clipping thresholds, not observed maxima.
    """
    plan = {r.node: r for r in fp16_plan or []}
    rows = []
    for node in model.graph.node:
        group = region.groups.get(node.name)
        if group in int8_groups:
            precision, reason = "int8", ""
        elif group is None:
            precision, reason = "fp32", "outside the INT8 region (RoIAlign, NMS, decoding, logits, shapes)"
        elif node.name in plan and plan[node.name].precision == "fp16":
            precision, reason = "fp16", "returned to float by the AP budget"
        elif node.name in plan:
            precision, reason = "fp32", f"returned to float by the AP budget; {plan[node.name].reason}"
        else:
            precision, reason = "fp32", "returned to float by the AP budget"
        rows.append(NodePrecision(node.name, node.op_type, group, precision, reason))
    return rows


def _progress_keys(options: CalibrateOptions, batches: CalibrationBatches, evalset) -> tuple[str, str]:
    """Keys of the range statistics and of the budget measurements: digests of everything they depend on."""
    settings = {"max": (), "percentile": (options.percentile, options.num_bins), "entropy": (options.num_bins,)}
    ranges = inputs_key("ranges", file_digest(options.model), options.method, settings.get(options.method),
                        options.batch_size, [file_digest(p) for p in batches.paths])
    if evalset is None:
        return ranges, ""
    coco, ids = evalset.coco, evalset.image_ids
    runs = options.threads if options.evaluator in ("auto", "onnxruntime") else (options.threads, options.evaluator)
    budget = inputs_key("budget", ranges, options.fallback, runs, [file_digest(p) for p in evalset.images],
                        coco.dataset.get("categories"), [coco.imgs[i] for i in ids], [coco.imgToAnns[i] for i in ids])
    return ranges, budget


def _load_inputs(options: CalibrateOptions) -> tuple[DeployGraph, EvalSet | None, CalibrationBatches]:
    """The float graph, the held-out evaluation set (None without eval_data) and the calibration batches."""
    graph = load_float_graph(options.model)
    evalset = EvalSet.from_data(options.eval_data, options.eval_images) if options.eval_data else None
    batches = CalibrationBatches.from_data(options.data, graph, options.num_images, options.batch_size)
    if evalset is not None:
        shared = {p.resolve() for p in evalset.images} & {p.resolve() for p in batches.paths}
        if shared:
            print(f"WARNING: {len(shared)} of the --eval-data images are also calibration images: the AP budget "
                  "is then measured partly on data the scales were fitted to; hold them out", flush=True)
    return graph, evalset, batches


def _choose_groups(options: CalibrateOptions, graph: DeployGraph, amax: dict[str, float], region: Region,
                   evalset: EvalSet | None, evaluate: Evaluate | None, build, journal_file: Path, budget_key: str,
                   summary: dict) -> tuple[list[str], onnx.ModelProto]:
    """(float groups, the graph to ship): the AP budget's choice with an evalset (recorded in summary["budget"]),
    else every group INT8."""
    if evalset is None:
        print("no --eval-data: every layer group is INT8 and no AP budget was checked")
        return [], build(region.group_names(), [])
    journal = Journal(journal_file, budget_key, "calibrate: AP budget measurements")
    try:
        budget = search_budget(graph, amax, region, evalset, evaluate, options.max_ap_drop, build=build,
                               journal=journal)
    finally:
        journal.close()
    for line in budget.summary_lines():
        print(line)
    summary["budget"] = {"max_ap_drop": options.max_ap_drop, "met": budget.met, "baseline": budget.baseline,
                         "final": budget.final, "eval_images": len(evalset.images), "steps": budget.steps,
                         "sweep": [asdict(s) for s in budget.sweep]}
    if not budget.met:
        print(f"WARNING: the AP budget ({options.max_ap_drop} segm AP points) is not met even with every "
              f"layer group in {options.fallback}: the loss is outside the quantized layers", flush=True)
    return budget.float_groups, budget.model


def _cache_scales(float_model: onnx.ModelProto, model: onnx.ModelProto) -> dict[str, float]:
    """The Q/DQ graph's activation scales under the float graph's tensor names, for the TensorRT cache.

    The cache carries the Q/DQ graph's own scales: onnxruntime's quantizer gives a Relu's input the Relu
    output's range and MaxPool / Resize outputs their input's scale, and TensorRT 10's implicit path must
    quantize exactly as the explicit graph does (a Q reading a float16 group's output reads an inserted
    Cast to float32: the name is its source's).
    """
    float_tensors = {t for n in float_model.graph.node for t in (*n.input, *n.output)}
    producer = {o: n for n in model.graph.node for o in n.output}
    scales = {}
    for tensor, scale in sorted(activation_scales(model).items()):
        while tensor not in float_tensors and tensor in producer and producer[tensor].op_type == "Cast":
            tensor = producer[tensor].input[0]
        if tensor in float_tensors:
            scales[tensor] = scale
    return scales


def calibrate_int8(options: CalibrateOptions, evaluate: Evaluate | None = None) -> dict:
    """Run the INT8 flow; returns the summary also stored in the precision report. evaluate: scores the
    candidate graphs of the AP budget (budget.Evaluate), required with options.eval_data."""
    from maskrcnn_deploy.calibration.fp16 import convert_nodes_fp16, plan_precision

    t0 = time.monotonic()
    if options.fallback not in ("fp16", "fp32"):
        raise PrecisionError(f"--fallback must be fp16 or fp32, got {options.fallback!r}")
    if options.eval_data and evaluate is None:
        raise ValueError("calibrate_int8: eval_data needs an evaluator (runtime/evaluate.py graph_evaluator)")
    output = Path(options.output)
    graph, evalset, batches = _load_inputs(options)
    # an interrupted run (Ctrl-C) resumes from these, beside the output, when its inputs are the same
    ranges_file = output.with_name(output.name + ".ranges-progress.npz")
    journal_file = output.with_name(output.name + ".budget-progress.jsonl")
    if not options.resume:
        ranges_file.unlink(missing_ok=True)
        journal_file.unlink(missing_ok=True)
    ranges_key, budget_key = _progress_keys(options, batches, evalset)
    print(f"progress is saved in {ranges_file}" + (f" and {journal_file}" if evalset is not None else "") +
          ": if interrupted, run the same command again to resume", flush=True)
    region = find_region(graph.model)
    # the region with its logit layers, so that the ranges file also serves `convert --fp16 --ranges`
    tensors = region_tensors(graph.model, find_region(graph.model, with_logits=True).nodes())
    amax = collect_ranges(graph.model, batches, options.method, tensors, percentile=options.percentile,
                          num_bins=options.num_bins, progress_file=ranges_file, key=ranges_key)
    summary = {"method": options.method, "percentile": options.percentile if options.method == "percentile" else None,
               "calibration_images": len(batches.paths), "groups": region.group_names()}

    def build(int8_groups, float_groups):
        """The graph for a split of the layer groups: Q/DQ on the INT8 ones, the others in the fallback."""
        model = quantize_qdq(graph.model, amax, region.nodes(int8_groups))
        if float_groups and options.fallback == "fp16":
            model = convert_nodes_fp16(model, region.nodes(float_groups), amax)
        return model

    float_groups, model = _choose_groups(options, graph, amax, region, evalset, evaluate, build, journal_file,
                                         budget_key, summary)
    int8_groups = [g for g in region.group_names() if g not in float_groups]
    fp16_plan = plan_precision(graph.model, amax, region.nodes(float_groups)) \
        if float_groups and options.fallback == "fp16" else None
    scales = _cache_scales(graph.model, model)
    summary.update(int8_groups=int8_groups, fallback_groups=float_groups,
                   fallback_precision=options.fallback if float_groups else None)
    cache, report = output.with_suffix(".cache"), output.with_suffix(".precision.json")
    rows = precision_rows(graph.model, region, int8_groups, fp16_plan)
    texts = {
        cache: calibration_cache_text(scales, options.trt_version, options.cache_algorithm),
        output.with_suffix(".ranges.json"): json.dumps({"method": options.method, "amax": amax}, indent=1),
        **dict(zip(report_paths(report), report_texts(rows, summary, REPORT_TITLE))),
    }
    # all five files replace a previous run's together, after the graph passed its checks
    atomic_write_all({output: lambda tmp: _save_and_check(model, tmp),
                      **{path: (lambda tmp, text=text: tmp.write_text(text)) for path, text in texts.items()}})
    ranges_file.unlink(missing_ok=True)
    journal_file.unlink(missing_ok=True)
    print(f"wrote {output}, {cache} ({len(scales)} tensors, TensorRT {options.trt_version}), {report} "
          f"in {time.monotonic() - t0:.0f} s")
    return summary
