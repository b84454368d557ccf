"""The divergence report: per tensor in graph order, its error; where the error first passes the threshold;
its versioned JSON layout (DIVERGENCE_SCHEMA, described by the JSON Schema in DIVERGENCE_SCHEMA_FILE).

"First divergent" is the first tensor, in the reference's topological order, whose relative L2 error (worst
over images) exceeds the threshold, or whose comparison failed (nonfinite). Every tensor it depends on comes
earlier and stayed under the threshold, so this is the node where the error jumps past it. Each row also
carries the largest error among the node's compared inputs (`input_rel_l2`): rel_l2 - input_rel_l2 is the
error the node itself adds, and `largest_jumps` ranks the nodes by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from maskrcnn_deploy.common.files import write_json
from maskrcnn_deploy.runtime.backend.tensorrt.environment import package_version  # pure Python: no TensorRT needed
from maskrcnn_deploy.runtime.diverge.metrics import TensorError
from maskrcnn_deploy.runtime.diverge.tensors import TensorPair

__all__ = ["DIVERGENCE_SCHEMA", "DIVERGENCE_SCHEMA_FILE", "DEFAULT_THRESHOLD", "TensorRow", "DivergenceReport",
           "write_divergence_json"]

# Adding, removing, renaming or retyping a field means version + 1 and a new schema file.
DIVERGENCE_SCHEMA = {"name": "maskrcnn-deploy.divergence-report", "version": 1}
DIVERGENCE_SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "divergence_report.v1.schema.json"
DEFAULT_THRESHOLD = 0.01  # relative L2 error: float16 rounding adds ~1e-3 a layer, int8 ~1e-2
LARGEST_JUMPS = 10


@dataclass
class TensorRow:
    """One compared tensor: which pair, and its error (worst over images)."""

    pair: TensorPair
    error: TensorError
    input_rel_l2: float | None  # largest rel_l2 among the node's compared inputs (None: no compared input)

    @property
    def jump(self) -> float | None:
        """The error this node adds: its rel_l2 minus its inputs' largest (None without a rel_l2)."""
        if self.error.rel_l2 is None:
            return None
        return self.error.rel_l2 - (self.input_rel_l2 or 0.0)

    def to_dict(self) -> dict:
        p, e = self.pair, self.error
        return {"name": p.name, "node": p.node, "op": p.op, "index": p.index, "depth": p.depth, "shape": e.shape,
                "artifact_tensor": p.artifact, "seen_through": list(p.seen_through), "artifact_dtype": e.dtype,
                "status": e.status, "cosine": e.cosine, "rel_l2": e.rel_l2, "p99_abs": e.p99_abs,
                "max_abs": e.max_abs, "input_rel_l2": self.input_rel_l2}


@dataclass
class DivergenceReport:
    """Layer-by-layer error of `artifact` against `reference` on `images`."""

    reference: str
    artifact: str
    images: list[str]                       # file names, in the order run
    input_shape: list[int]                  # the graphs' `images` input [B,3,H,W]
    threshold: float
    rows: list[TensorRow]                   # in the reference's graph order
    not_in_artifact: list[str] = field(default_factory=list)
    not_float: list[str] = field(default_factory=list)   # matched tensors holding integers or booleans

    @property
    def first_divergent(self) -> TensorRow | None:
        for row in self.rows:
            e = row.error
            if e.status == "nonfinite" or (e.rel_l2 is not None and e.rel_l2 > self.threshold):
                return row
        return None

    def largest_jumps(self, count: int = LARGEST_JUMPS) -> list[TensorRow]:
        """The `count` rows adding the most error (jump > 0), largest first."""
        rows = [r for r in self.rows if r.jump is not None and r.jump > 0]
        return sorted(rows, key=lambda r: -r.jump)[:count]

    def to_dict(self) -> dict:
        """JSON-ready, layout DIVERGENCE_SCHEMA (field by field in DIVERGENCE_SCHEMA_FILE)."""
        first = self.first_divergent
        statuses = [r.error.status for r in self.rows]
        return {
            "schema": dict(DIVERGENCE_SCHEMA), "package_version": package_version(),
            "reference": self.reference, "artifact": self.artifact, "images": list(self.images),
            "input_shape": list(self.input_shape), "threshold": {"metric": "rel_l2", "value": self.threshold},
            "first_divergent": None if first is None else first.to_dict(),
            "largest_jumps": [{"name": r.pair.name, "op": r.pair.op, "index": r.pair.index, "rel_l2": r.error.rel_l2,
                               "input_rel_l2": r.input_rel_l2} for r in self.largest_jumps()],
            "counts": {"compared": statuses.count("compared"), "shape_mismatch": statuses.count("shape_mismatch"),
                       "nonfinite": statuses.count("nonfinite"), "not_float": len(self.not_float),
                       "not_in_artifact": len(self.not_in_artifact)},
            "not_in_artifact": list(self.not_in_artifact), "not_float": list(self.not_float),
            "tensors": [r.to_dict() for r in self.rows],
        }

    def summary_lines(self) -> list[str]:
        """Human-readable lines: what was compared, the first divergent tensor, the largest jumps."""
        first = self.first_divergent
        lines = [f"divergence: {len(self.rows)} tensors compared on {len(self.images)} image(s) "
                 f"({len(self.not_in_artifact)} reference tensors not in the artifact, {len(self.not_float)} "
                 f"not float)"]
        if first is None:
            worst = max((r.error.rel_l2 for r in self.rows if r.error.rel_l2 is not None), default=0.0)
            lines.append(f"no tensor's relative L2 error exceeds {self.threshold:g} (largest {worst:.3g})")
        else:
            e = first.error
            what = "inf/nan" if e.status == "nonfinite" else f"relative L2 {e.rel_l2:.3g}, cosine {e.cosine:.6f}"
            lines.append(f"first divergent tensor (> {self.threshold:g}): {first.pair.name} ({first.pair.op} "
                         f"{first.pair.node}, #{first.pair.index}, depth {first.pair.depth}): {what}")
        for r in self.largest_jumps(5):
            lines.append(f"  adds {r.jump:.3g}: {r.pair.name} ({r.pair.op}) relative L2 {r.error.rel_l2:.3g}")
        return lines


def write_divergence_json(report: DivergenceReport, path: str | Path) -> Path:
    """Write `report.to_dict()` as indented JSON, atomically."""
    return write_json(path, report.to_dict())
