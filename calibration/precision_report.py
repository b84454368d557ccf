"""The precision report: every node of a deploy graph and the precision it runs in, as JSON and Markdown.

`maskrcnn-deploy calibrate` (calibrate.py, INT8) and `convert --fp16` (fp16.py) write it beside their graph
as `<stem>.precision.json` + `<stem>.precision.md`; the TensorRT builder reads the JSON to pin layers to
these precisions on the weakly typed TensorRT 10 path (runtime/backend/tensorrt/build_plan.py).

JSON (schema SCHEMA):
    {"schema": "maskrcnn_deploy.precision/1",
     "summary": {...},                  calibrate only: method, groups, budget, ...
     "layers": [{"node", "op_type", "group", "precision", "reason", "max_abs"}, ...]}   one per node, graph order
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from maskrcnn_deploy.calibration.regions import PrecisionError
from maskrcnn_deploy.common.files import atomic_write_all

__all__ = ["SCHEMA", "PRECISIONS", "NodePrecision", "report_paths", "report_texts", "write_precision_report",
           "read_precision_report"]

SCHEMA = "maskrcnn_deploy.precision/1"
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class NodePrecision:
    """One row of the precision report: a node of the float32 graph and the precision it runs in."""

    node: str
    op_type: str
    group: str | None              # layer group (regions.find_region), None outside the network region
    precision: str                 # one of PRECISIONS
    reason: str                    # why not the lowest precision considered, "" when it is
    max_abs: float | None = None   # largest observed |output| on calibration data, None when not observed


def report_paths(path: str | Path) -> tuple[Path, Path]:
    """(JSON, Markdown) paths of a report: `m.precision.json` -> `m.precision.md` beside it."""
    path = Path(path)
    return path, path.with_suffix(".md") if path.suffix == ".json" else path.with_name(path.name + ".md")


def report_texts(rows: list[NodePrecision], summary: dict | None = None, title: str = "") -> tuple[str, str]:
    """The report as (JSON, Markdown) text (a non-finite max_abs is written as null). summary: stored in the
    JSON, its scalar entries listed above the Markdown table; title: the Markdown heading's parenthesis."""
    layers = [{**asdict(r), "max_abs": r.max_abs if r.max_abs is not None and math.isfinite(r.max_abs) else None}
              for r in rows]
    report = {"schema": SCHEMA, **({"summary": summary} if summary is not None else {}), "layers": layers}
    counts = [f"- {p} nodes: {sum(r.precision == p for r in rows)}" for p in PRECISIONS]
    lines = ["# Layer precision" + (f" ({title})" if title else ""), "",
             *(f"- {k}: {v}" for k, v in (summary or {}).items() if not isinstance(v, (dict, list))), *counts,
             "", "| node | op | group | precision | max abs | reason |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.node} | {r.op_type} | {r.group or ''} | {r.precision} | "
              f"{'' if r.max_abs is None else f'{r.max_abs:.3g}'} | {r.reason} |" for r in rows]
    return json.dumps(report, indent=1), "\n".join(lines) + "\n"


def write_precision_report(rows: list[NodePrecision], path: str | Path, summary: dict | None = None,
                           title: str = "") -> tuple[Path, Path]:
    """Write the JSON at `path` and the Markdown beside it (report_paths), atomically and together."""
    paths = report_paths(path)
    writes = {p: (lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
              for p, text in zip(paths, report_texts(rows, summary, title))}
    atomic_write_all(writes)
    return paths


def read_precision_report(path: str | Path) -> dict[str, str]:
    """ONNX node -> fp32|fp16|int8 of a report's JSON; PrecisionError (one line) on a missing or bad file."""
    path = Path(path)
    if not path.is_file():
        raise PrecisionError(f"precision report not found: {path} (`maskrcnn-deploy calibrate` and `convert --fp16` "
                             "write MODEL.precision.json)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PrecisionError(f"{path} is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise PrecisionError(f"{path} is not a maskrcnn-deploy precision report (schema {SCHEMA})")
    layers: dict[str, str] = {}
    for row in raw.get("layers", []):
        if not isinstance(row, dict) or row.get("precision") not in PRECISIONS or not row.get("node"):
            raise PrecisionError(f"{path}: every layer row needs a node and a precision in {PRECISIONS}, got {row!r}")
        layers[str(row["node"])] = str(row["precision"])
    return layers
