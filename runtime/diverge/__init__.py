"""Where the error enters: a layer-by-layer divergence report of an artifact graph against its reference graph.

    report = run_divergence("model.onnx", "model.fp16.onnx", "data/val.json")   # both ONNX graphs
    write_divergence_json(report, "out/divergence.json"); save_divergence_plot(report, "out/divergence.png")

Both graphs run in ONNX Runtime through Polygraphy on the same preprocessed images, with every intermediate
tensor that exists in both marked as an output; per tensor in the reference's graph order: cosine similarity,
relative L2 error and p99 absolute error, the first tensor whose error passes a threshold, and a plot of the
error along the graph's depth. `maskrcnn-deploy diverge` (runtime/cli/diverge.py) and `check --diverge` are
thin layers over it; runtime/report_html.py draws its HTML section.

One concept per module:
    tensors : which tensors of the two graphs are the same (names; Cast and Q/DQ wrappers seen through)
    runners : Polygraphy ONNX Runtime runners with those tensors marked as outputs (custom op registered)
    metrics : the error of one tensor (Polygraphy's comparator functions), per image and worst over images
    report  : `DivergenceReport`, the first divergent tensor, the versioned JSON (runtime/schemas/)
    plot    : the PNG of error along graph depth (PIL)
    run     : `run_divergence`, images in, report out
"""

from __future__ import annotations

from maskrcnn_deploy.runtime.diverge.plot import save_divergence_plot
from maskrcnn_deploy.runtime.diverge.report import (
    DEFAULT_THRESHOLD,
    DIVERGENCE_SCHEMA,
    DIVERGENCE_SCHEMA_FILE,
    DivergenceReport,
    TensorRow,
    write_divergence_json,
)
from maskrcnn_deploy.runtime.diverge.run import DEFAULT_IMAGES, DivergeError, run_divergence
from maskrcnn_deploy.runtime.diverge.tensors import SEE_THROUGH, match_tensors

__all__ = ["run_divergence", "DivergenceReport", "TensorRow", "DivergeError", "write_divergence_json",
           "save_divergence_plot", "match_tensors", "SEE_THROUGH", "DEFAULT_THRESHOLD", "DEFAULT_IMAGES",
           "DIVERGENCE_SCHEMA", "DIVERGENCE_SCHEMA_FILE"]
