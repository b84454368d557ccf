"""A float32 deploy graph file to a mixed-precision float16 one, end to end (`maskrcnn-deploy convert --fp16`
and the demo): the activation ranges, from calibration images or from a `calibrate` run's ranges file;
the rewrite (calibration/fp16.py); the graph saved checked, and its precision report beside it.

    result = convert_fp16_file("m.onnx", "m.fp16.onnx", data="data/train.json")
    # m.fp16.onnx and m.fp16.precision.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from maskrcnn_deploy.calibration.regions import PrecisionError

__all__ = ["Fp16Result", "convert_fp16_file"]


@dataclass
class Fp16Result:
    """What `convert_fp16_file` wrote, and how many nodes of the float32 graph run in each precision."""

    output: Path
    report: Path        # <output stem>.precision.json (and .md beside it)
    fp16_nodes: int
    fp32_nodes: int


def convert_fp16_file(model: str | Path, output: str | Path, data: str | Path | None = None,
                      ranges: str | Path | None = None, num_images: int = 32, batch_size: int = 1,
                      fp16_io: bool = False) -> Fp16Result:
    """Convert the float32 graph `model` to float16 where the ranges allow, writing `output` and its report.

    The ranges come from `ranges` (<stem>.ranges.json of a `calibrate` run over the same graph) or else from
    the first `num_images` images of `data` (a folder or COCO json); PrecisionError when neither is given.
    Graph inputs and outputs stay float32 unless `fp16_io`."""
    from maskrcnn_deploy.calibration.calibrate import save_checked
    from maskrcnn_deploy.calibration.data import CalibrationBatches
    from maskrcnn_deploy.calibration.deploy_graph import load_float_graph
    from maskrcnn_deploy.calibration.fp16 import REPORT_TITLE, convert_fp16
    from maskrcnn_deploy.calibration.precision_report import write_precision_report
    from maskrcnn_deploy.calibration.ranges import collect_ranges, read_ranges

    graph = load_float_graph(model)
    if ranges:
        amax = read_ranges(ranges)
    elif data:
        batches = CalibrationBatches.from_data(data, graph, num_images, batch_size)
        amax = collect_ranges(graph.model, batches, "max")  # every float tensor: overflow is judged on the real maxima
    else:
        raise PrecisionError("convert --fp16 keeps in float32 what overflows float16 on real data: give --data "
                             "(calibration images) or --ranges (from a `calibrate` run over the same graph)")
    converted, rows = convert_fp16(graph, amax, keep_io_types=not fp16_io)
    save_checked(converted, output)
    report, _ = write_precision_report(rows, Path(output).with_suffix(".precision.json"), title=REPORT_TITLE)
    fp32 = sum(r.precision == "fp32" for r in rows)
    return Fp16Result(Path(output), report, len(rows) - fp32, fp32)
